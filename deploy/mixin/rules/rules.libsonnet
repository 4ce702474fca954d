// Recording rules: none. The event alerts read the exporter's persisted last-failure and
// last-forced timestamps directly over their window (alerts/events.libsonnet), so there is
// nothing to pre-aggregate; a group added here goes to `prometheusRules` as in other mixins.
{}

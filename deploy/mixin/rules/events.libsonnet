// Recording rules the event alerts read (alerts/events.libsonnet). They are evaluated in the
// alerts' own group, before the alerts: rules of one group are evaluated in order, while
// separate groups are evaluated independently, so an alert in another group could read a
// recorded series one evaluation old. They are therefore not a group of their own
// (`prometheusRules`) but a hidden field that the events group starts with.
{
  eventRecordingRules:: [
    // The persisted event counters without target labels (instance, pod, ...): the same
    // logical counter, whichever exporter process currently exports it.
    {
      record: 'image_set:healthimaging_failed_versions_total:max',
      expr: 'max by (datastore_id, image_set_id, workflow_status) (healthimaging_failed_versions_total{%(exporterSelector)s})' % $._config,
    },
    {
      record: 'image_set:healthimaging_forced_versions_total:max',
      expr: 'max by (datastore_id, image_set_id) (healthimaging_forced_versions_total{%(exporterSelector)s})' % $._config,
    },
    // Present (any value) while some exporter process reports the data store; the event alerts
    // compare its sample count with an event series' to tell a new series from new history.
    {
      record: 'datastore:healthimaging_up:max',
      expr: 'max by (datastore_id) (healthimaging_up{%(exporterSelector)s})' % $._config,
    },
  ],
}

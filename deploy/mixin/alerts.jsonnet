// The alert groups (with the recording rules they read) as a Prometheus rules file, for the
// jsonnet command line as other mixins are built:  jsonnet -S alerts.jsonnet > rules.yml
// deploy/mixin/generate.py writes the same rules, with a header and readable key order.
std.manifestYamlDoc((import 'mixin.libsonnet').prometheusAlerts)

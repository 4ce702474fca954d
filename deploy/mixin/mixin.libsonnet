// The healthimaging-exporter monitoring mixin: alerts (prometheusAlerts), the recording rules
// they read (kept in the alerts' group, see rules/events.libsonnet) and a Grafana dashboard
// (grafanaDashboards), all configured by config.libsonnet's _config.
//
// deploy/mixin/generate.py (`make mixin`) writes deploy/prometheus/rules.yml,
// deploy/kubernetes/prometheusrule.yaml and deploy/grafana/dashboard.json from it; a test fails
// when those differ from a fresh generation.
(import 'config.libsonnet') +
(import 'rules/rules.libsonnet') +
(import 'alerts/alerts.libsonnet') +
(import 'dashboards/dashboards.libsonnet')

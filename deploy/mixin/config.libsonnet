// The settings of the healthimaging-exporter mixin. Override any of them with
//   (import 'mixin.libsonnet') + { _config+:: { exporterJobSelector: 'job="hi-exporter"' } }
// The defaults generate the rules and dashboard shipped in deploy/.
{
  _config+:: {
    // Selectors are inserted between {} in PromQL.

    // Selects the exporter's scrape targets among all `up` series (HealthImagingExporterDown
    // pages when none of them is up, or none exists). Set it to your scrape job: with the
    // Prometheus operator the job is the Service name.
    exporterJobSelector: 'job="healthimaging-exporter"',

    // Extra matchers for every healthimaging_* series the rules and the dashboard read, e.g.
    // 'cluster="eu-west-1"' when one Prometheus sees several exporters that you alert on
    // separately. Empty (the default) reads them all, whatever their job: the metric names
    // belong to this exporter alone, and sharded deployments may run under several jobs.
    // It goes last between the braces (`{reason="x",}` is valid PromQL when it is empty).
    exporterSelector: '',

    // The label telling clusters apart; the dashboard has a variable for it, shown only with
    // showMultiCluster (its "All" matches series without the label too).
    clusterLabel: 'cluster',
    showMultiCluster: false,

    // Thresholds.
    // HealthImagingPollStale: seconds since the last fully successful poll of a data store;
    // about ten times poll.interval_seconds (60 s by default).
    pollStaleThresholdSeconds: 600,
    // HealthImagingThrottlingSustained: share of the API attempts of an operation throttled
    // (over 5 minutes, for 15 minutes).
    throttlingRatioThreshold: 0.1,
    // HealthImagingWorkflowStuck: seconds a version may stay in an in-progress workflow status
    // (COPYING, UPDATING, IMPORTING, DELETING, ...) before it pages. Copies of large image sets
    // take minutes; raise it if yours legitimately take longer.
    stuckWorkflowThresholdSeconds: 3600,
    // HealthImagingWorkflowStuck reads the in-progress series over this window, so a scrape gap
    // shorter than it (exporter restart, rolling update, reshard, Prometheus restart) neither
    // resolves nor re-pages the alert. A version that leaves its status resolves the alert at the
    // next evaluation when the exporter process that tracks it is scraped and exports the image
    // set's series (per_image_set: all); otherwise (failures_only, none, or the version left
    // while its image set moved between processes) one window later.
    stuckWorkflowLookback: '15m',

    // Every alert's runbook_url is runbookURLBase + '#' + the lower-cased alert name: one
    // section per alert in docs/runbooks.md. Point it at your fork or an internal copy.
    runbookURLBase: 'https://github.com/healthimaging-exporter/healthimaging-exporter/blob/main/docs/runbooks.md',

    // Dashboards.
    dashboardTitle: 'AWS HealthImaging exporter',
    dashboardUID: 'healthimaging-exporter',
    dashboardTags: ['healthimaging', 'aws', 'prometheus'],
    dashboardRefresh: '1m',
  },
}

// Health alerts: the exporter, its polls of the data stores, its state and its shards.
// docs/alerting.md explains every alert; docs/runbooks.md has one section per alert.
// Assumptions of the defaults: the exporter polls every 60 s (poll.interval_seconds) and
// Prometheus scrapes it every 30 s; adjust the thresholds in config.libsonnet if yours differ.
// Each `expr` is one plain string with the selectors of _config interpolated (`% $._config`).
{
  prometheusAlerts+:: {
    groups+: [
      {
        name: 'healthimaging-exporter.health',
        rules: std.map($.withRunbook, [
          // One alert per data store the down target last reported (so routing by
          // datastore_id works); a target that never reported one alerts on its own, and so
          // does a job that has vanished from service discovery.
          {
            alert: 'HealthImagingExporterDown',
            expr: |||
              (
                  group by (job, instance, datastore_id) (last_over_time(healthimaging_up{%(exporterJobSelector)s}[6h]))
                  and on (job, instance)
                  (up{%(exporterJobSelector)s} == 0)
              )
              or on (job, instance)
                (up{%(exporterJobSelector)s} == 0)
              or
                absent(up{%(exporterJobSelector)s})
            ||| % $._config,
            'for': '5m',
            labels: {
              severity: 'critical',
            },
            annotations: {
              // With absent() (no target at all) the only label is the selector's job.
              summary: 'healthimaging-exporter {{ with $labels.instance }}{{ . }}{{ else }}(job {{ $labels.job }}){{ end }} is down',
              description: 'Prometheus cannot scrape healthimaging-exporter{{ with $labels.instance }} at {{ . }}{{ end }}; {{ with $labels.datastore_id }}data store {{ . }} is{{ else }}its data stores are{{ end }} not monitored and failure alerts cannot fire.',
            },
          },
          // A data store that never had a successful poll (timestamp 0) is left to
          // HealthImagingDatastoreUnreachable.
          {
            alert: 'HealthImagingPollStale',
            expr: |||
              (time() - healthimaging_exporter_last_successful_poll_timestamp_seconds{%(exporterSelector)s} > %(pollStaleThresholdSeconds)d)
              and (healthimaging_exporter_last_successful_poll_timestamp_seconds{%(exporterSelector)s} > 0)
              unless on (datastore_id)
                (max by (datastore_id) (healthimaging_datastore_status{datastore_status="ACTIVE",%(exporterSelector)s}) == 0)
            ||| % $._config,
            labels: {
              severity: 'warning',
            },
            annotations: {
              summary: 'Data store {{ $labels.datastore_id }} not polled successfully for {{ $value | humanizeDuration }}',
              description: 'The last fully successful poll of data store {{ $labels.datastore_id }} by {{ $labels.instance }} was {{ $value | humanizeDuration }} ago; new failed or forced versions are not being detected.',
            },
          },
          {
            alert: 'HealthImagingDatastoreUnreachable',
            // Not for a data store whose status is known not to be ACTIVE: it cannot be polled
            // by design, and HealthImagingDatastoreDeleting / ...NotActive say why.
            expr: |||
              (healthimaging_up{%(exporterSelector)s} == 0)
              unless on (datastore_id)
                (max by (datastore_id) (healthimaging_datastore_status{datastore_status="ACTIVE",%(exporterSelector)s}) == 0)
            ||| % $._config,
            'for': '10m',
            labels: {
              severity: 'critical',
            },
            annotations: {
              summary: 'Data store {{ $labels.datastore_id }} cannot be polled',
              description: 'Polls of data store {{ $labels.datastore_id }} by {{ $labels.instance }} have failed for 10 minutes. Poll error reasons in the last 15 minutes: {{ range $i, $s := query (printf "sum by (reason) (increase(healthimaging_exporter_poll_errors_total{datastore_id=\'%s\'}[15m])) > 0" $labels.datastore_id) | sortByLabel "reason" }}{{ if $i }}, {{ end }}{{ $s.Labels.reason }}{{ else }}none recorded{{ end }}.',
            },
          },
          {
            alert: 'HealthImagingDatastoreAccessDenied',
            expr: |||
              (healthimaging_up{%(exporterSelector)s} == 0)
              and on (datastore_id)
              (increase(healthimaging_exporter_poll_errors_total{reason="access_denied",%(exporterSelector)s}[15m]) > 0)
            ||| % $._config,
            'for': '5m',
            labels: {
              severity: 'critical',
              reason: 'access_denied',
            },
            annotations: {
              summary: 'Access denied to data store {{ $labels.datastore_id }}',
              description: "AWS HealthImaging denies the exporter's credentials access to data store {{ $labels.datastore_id }} (reason access_denied); check the IAM policy and the data store's region.",
            },
          },
          // More than throttlingRatioThreshold of the API attempts of an operation throttled
          // for 15 minutes.
          {
            alert: 'HealthImagingThrottlingSustained',
            expr: |||
              (
                  sum by (job, instance, operation) (rate(healthimaging_exporter_api_requests_total{outcome="throttled",%(exporterSelector)s}[5m]))
                /
                  sum by (job, instance, operation) (rate(healthimaging_exporter_api_requests_total{%(exporterSelector)s}[5m]))
              ) > %(throttlingRatioThreshold)g
            ||| % $._config,
            'for': '15m',
            labels: {
              severity: 'warning',
            },
            annotations: {
              summary: 'AWS HealthImaging throttles {{ $labels.operation }} calls of {{ $labels.instance }}',
              description: '{{ $value | humanizePercentage }} of the {{ $labels.operation }} requests of {{ $labels.instance }} have been throttled for 15 minutes; polls of every data store it serves (datastore_id: all) slow down and may go stale. Lower the rate budget or raise the service quota.',
            },
          },
          // No progress for 30 minutes of evaluation plus the 30 minute window = 1 hour.
          {
            alert: 'HealthImagingBackfillStalled',
            expr: |||
              (healthimaging_datastore_backfill_complete{%(exporterSelector)s} == 0)
              and
              (changes(healthimaging_datastore_backfill_image_sets{%(exporterSelector)s}[30m]) == 0)
            ||| % $._config,
            'for': '30m',
            labels: {
              severity: 'warning',
            },
            annotations: {
              summary: 'Inventory backfill of data store {{ $labels.datastore_id }} is not progressing',
              description: 'The inventory backfill of data store {{ $labels.datastore_id }} on {{ $labels.instance }} is not complete and has listed no new image sets for an hour.',
            },
          },
          {
            alert: 'HealthImagingStateNotWritable',
            expr: 'healthimaging_exporter_state_writable{%(exporterSelector)s} == 0' % $._config,
            'for': '5m',
            labels: {
              severity: 'warning',
            },
            annotations: {
              summary: 'healthimaging-exporter {{ $labels.instance }} cannot write its state',
              description: 'The snapshot store of {{ $labels.instance }} has not been writable for 5 minutes (datastore_id: all it serves); a restart now would lose the version baseline and reset the persisted counters.',
            },
          },
          {
            alert: 'HealthImagingConfigReloadFailed',
            expr: 'healthimaging_exporter_config_last_reload_successful{%(exporterSelector)s} == 0' % $._config,
            'for': '5m',
            labels: {
              severity: 'warning',
            },
            annotations: {
              summary: 'healthimaging-exporter {{ $labels.instance }} rejected its new configuration',
              description: 'The last configuration reload of {{ $labels.instance }} failed; it keeps running the previous configuration (datastore_id: all it serves), and will fail to start if restarted.',
            },
          },
          // Distinct running ordinals must equal total_shards, no ordinal may run twice or be
          // out of range; otherwise some image sets are polled twice or not at all.
          {
            alert: 'HealthImagingShardMismatch',
            expr: |||
              (
                  count by (job) (count_values by (job) ("ordinal", healthimaging_exporter_shard_ordinal{%(exporterSelector)s}))
                  != on (job) max by (job) (healthimaging_exporter_total_shards{%(exporterSelector)s})
              )
              or
              (
                  count by (job) (healthimaging_exporter_shard_ordinal{%(exporterSelector)s})
                  != on (job) max by (job) (healthimaging_exporter_total_shards{%(exporterSelector)s})
              )
              or
              (
                  count by (job) (count_values by (job) ("total", healthimaging_exporter_total_shards{%(exporterSelector)s})) > 1
              )
              or
              count by (job) (healthimaging_exporter_shard_ordinal{%(exporterSelector)s} >= healthimaging_exporter_total_shards{%(exporterSelector)s})
            ||| % $._config,
            'for': '10m',
            labels: {
              severity: 'warning',
            },
            annotations: {
              summary: 'healthimaging-exporter shards of job {{ $labels.job }} do not add up',
              description: 'The running shards of job {{ $labels.job }} disagree with healthimaging_exporter_total_shards (missing, duplicate or out-of-range ordinals, or different totals); image sets of some data store (datastore_id: any) may be unmonitored.',
            },
          },
        ]),
      },
    ],
  },
}

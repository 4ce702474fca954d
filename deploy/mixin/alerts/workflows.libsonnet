// Stuck workflows: a version that has stayed in an in-progress workflow status (COPYING,
// COPYING_WITH_READ_ONLY_ACCESS, UPDATING, UPDATING_FOR_STUDY_CONSISTENCY, IMPORTING, DELETING)
// for longer than _config.stuckWorkflowThresholdSeconds. docs/alerting.md explains it;
// docs/runbooks.md has its section.
//
// The exporter exports when a version entered its status (updatedAt, else createdAt), per image
// set (healthimaging_image_set_in_progress_since_timestamp_seconds, unless per_image_set is
// none) and per data store (..._oldest_in_progress_version_timestamp_seconds, absent when none
// is in progress). The alert is time() minus that timestamp, over the threshold:
//   - last_over_time(...[stuckWorkflowLookback]), not the instant value: a scrape gap shorter
//     than the window (exporter restart, kill -9, rolling update, Prometheus restart, the
//     handover of a reshard) leaves the last sample in place, so the alert neither resolves
//     nor fires anew;
//   - but a process that is scraped and still tracks the image set (it exports
//     healthimaging_image_set_versions of it now) without the in-progress series says the
//     version left the status: its last sample is dropped (`unless`), and the alert resolves
//     at the next evaluation. A process that stopped exporting the image set (down, or the
//     image set moved to another shard) says nothing, so its last sample stays for the window;
//   - `min by (datastore_id, image_set_id, workflow_status)` drops instance: a new pod or the
//     shard that now owns the image set continues the same alert;
//   - the second part, per data store and status without image_set_id, only where the exporter
//     exports no per-image-set series (per_image_set: none): the oldest timestamp over the
//     window (min_over_time, so a shard that loses its oldest version in a reshard does not
//     resolve it); it resolves one window after the version left.
// No `for:`: the age is in the value, so the page comes when the threshold passes.
{
  prometheusAlerts+:: {
    groups+: [
      {
        name: 'healthimaging-exporter.workflows',
        rules: std.map($.withRunbook, [
          {
            alert: 'HealthImagingWorkflowStuck',
            expr: |||
              (
                  time() - min by (datastore_id, image_set_id, workflow_status) (
                      last_over_time(healthimaging_image_set_in_progress_since_timestamp_seconds{%(exporterSelector)s}[%(stuckWorkflowLookback)s])
                    unless
                      (
                          (
                              last_over_time(healthimaging_image_set_in_progress_since_timestamp_seconds{%(exporterSelector)s}[%(stuckWorkflowLookback)s])
                            and ignoring (workflow_status)
                              healthimaging_image_set_versions{%(exporterSelector)s}
                          )
                        unless
                          healthimaging_image_set_in_progress_since_timestamp_seconds{%(exporterSelector)s}
                      )
                  ) > %(stuckWorkflowThresholdSeconds)d
              )
              or
              (
                  time() - min by (datastore_id, workflow_status) (
                      min_over_time(healthimaging_datastore_oldest_in_progress_version_timestamp_seconds{%(exporterSelector)s}[%(stuckWorkflowLookback)s])
                  ) > %(stuckWorkflowThresholdSeconds)d
                unless on (datastore_id, workflow_status)
                  last_over_time(healthimaging_image_set_in_progress_since_timestamp_seconds{%(exporterSelector)s}[%(stuckWorkflowLookback)s])
              )
            ||| % $._config,
            labels: {
              severity: 'critical',
            },
            annotations: {
              summary: '{{ with $labels.image_set_id }}Image set {{ . }}{{ else }}A version{{ end }} of data store {{ $labels.datastore_id }} has been {{ $labels.workflow_status }} for {{ $value | humanizeDuration }}',
              description: '{{ with $labels.image_set_id }}A version of image set {{ . }}{{ else }}The oldest version in {{ $labels.workflow_status }}{{ end }} in data store {{ $labels.datastore_id }} has been in workflow status {{ $labels.workflow_status }} for {{ $value | humanizeDuration }} (threshold %(threshold)s); the workflow may never finish.{{ if not $labels.image_set_id }} The exporter exports no per-image-set series for this data store (metrics.per_image_set: none), so the image set is not named.{{ end }}' % { threshold: std.toString($._config.stuckWorkflowThresholdSeconds) + ' s' },
            } + $.maybeImageSetAnnotations,
          },
        ]),
      },
    ],
  },
}

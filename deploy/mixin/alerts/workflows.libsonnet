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
//   - but a process that kept exporting the image set (healthimaging_image_set_versions, with
//     per_image_set: all) after its in-progress series ended says the version left the status:
//     within the window, it has more samples of the one than of the other (both come from the
//     same scrapes, so a gap, a restart or a move to another process removes as many of each).
//     Its samples are dropped (`unless`): the alert resolves at the next evaluation and stays
//     resolved when that process later stops (a rollout or reshard after the version left).
//     Without that series (per_image_set: failures_only) the alert resolves one window later;
//     an in-progress version first seen late (more than threshold minus window after it entered
//     the status) of an image set exported before pages up to one window late;
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
                          count_over_time(healthimaging_image_set_in_progress_since_timestamp_seconds{%(exporterSelector)s}[%(stuckWorkflowLookback)s])
                        < ignoring (workflow_status) group_left ()
                          count_over_time(healthimaging_image_set_versions{%(exporterSelector)s}[%(stuckWorkflowLookback)s])
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

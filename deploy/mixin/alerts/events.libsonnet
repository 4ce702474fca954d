// Event alerts: a version of an image set failed (COPY_FAILED, UPDATE_FAILED, IMPORT_FAILED) or
// was forced. docs/alerting.md explains every alert; docs/runbooks.md has one section per alert.
//
// They fire at once, without `for:`, and keep firing for one hour after the event, so a page is
// neither delayed nor gone before anyone looks at it. Their expressions cover three ways a new
// event shows up in the counters:
//   1. an existing series increases within the hour (`increase(...) > 0`; a reset followed by a
//      new failure also counts here, because increase() treats the drop as a reset);
//   2. the series' value differs from its last value before the hour (an event hidden by a gap,
//      e.g. failures found by the first poll after a long exporter outage, or after a reset of
//      the state file with the series absent for more than the hour);
//   3. the series did not exist at all in the day before the hour (the first failure of an
//      image set: the counter series is created at 1, so increase() never sees a 0 -> 1 step).
//      To stay quiet when Prometheus itself has no history (new Prometheus, lost TSDB) this
//      branch also needs the data store to have been reported for longer within the hour than
//      the series.
// The counters are first aggregated over instances (the recording rules of
// rules/events.libsonnet, which start this group), so a new pod IP, a restart or a reshard
// that re-exports the persisted counters under new target labels is not mistaken for an event.
//
// Each `expr` is one plain string: the recorded series it reads already carry
// _config.exporterSelector, so these strings have nothing to interpolate.
{
  prometheusAlerts+:: {
    groups+: [
      {
        name: 'healthimaging-exporter.events',
        rules: $.eventRecordingRules + std.map($.withRunbook, [
          {
            alert: 'HealthImagingCopyFailed',
            expr: |||
              (
                  increase(image_set:healthimaging_failed_versions_total:max{workflow_status="COPY_FAILED"}[1h]) > 0
                or
                  (image_set:healthimaging_failed_versions_total:max{workflow_status="COPY_FAILED"} > 0)
                  != last_over_time(image_set:healthimaging_failed_versions_total:max{workflow_status="COPY_FAILED"}[1d] offset 1h)
                or
                  (
                      (image_set:healthimaging_failed_versions_total:max{workflow_status="COPY_FAILED"} > 0)
                    unless
                      last_over_time(image_set:healthimaging_failed_versions_total:max{workflow_status="COPY_FAILED"}[1d] offset 1h)
                  )
                  and
                    count_over_time(image_set:healthimaging_failed_versions_total:max{workflow_status="COPY_FAILED"}[1h])
                    < on (datastore_id) group_left ()
                    count_over_time(datastore:healthimaging_up:max[1h])
              )
            |||,
            labels: {
              severity: 'critical',
            },
            annotations: {
              summary: 'COPY_FAILED version in image set {{ $labels.image_set_id }} of data store {{ $labels.datastore_id }}',
              description: 'A version of image set {{ $labels.image_set_id }} in data store {{ $labels.datastore_id }} entered COPY_FAILED within the last hour; the copy did not complete.',
            },
          },
          {
            alert: 'HealthImagingUpdateOrImportFailed',
            expr: |||
              (
                  increase(image_set:healthimaging_failed_versions_total:max{workflow_status=~"UPDATE_FAILED|IMPORT_FAILED"}[1h]) > 0
                or
                  (image_set:healthimaging_failed_versions_total:max{workflow_status=~"UPDATE_FAILED|IMPORT_FAILED"} > 0)
                  != last_over_time(image_set:healthimaging_failed_versions_total:max{workflow_status=~"UPDATE_FAILED|IMPORT_FAILED"}[1d] offset 1h)
                or
                  (
                      (image_set:healthimaging_failed_versions_total:max{workflow_status=~"UPDATE_FAILED|IMPORT_FAILED"} > 0)
                    unless
                      last_over_time(image_set:healthimaging_failed_versions_total:max{workflow_status=~"UPDATE_FAILED|IMPORT_FAILED"}[1d] offset 1h)
                  )
                  and
                    count_over_time(image_set:healthimaging_failed_versions_total:max{workflow_status=~"UPDATE_FAILED|IMPORT_FAILED"}[1h])
                    < on (datastore_id) group_left ()
                    count_over_time(datastore:healthimaging_up:max[1h])
              )
            |||,
            labels: {
              severity: 'critical',
            },
            annotations: {
              summary: '{{ $labels.workflow_status }} version in image set {{ $labels.image_set_id }} of data store {{ $labels.datastore_id }}',
              description: 'A version of image set {{ $labels.image_set_id }} in data store {{ $labels.datastore_id }} entered {{ $labels.workflow_status }} within the last hour.',
            },
          },
          {
            alert: 'HealthImagingForcedOverride',
            expr: |||
              (
                  increase(image_set:healthimaging_forced_versions_total:max[1h]) > 0
                or
                  (image_set:healthimaging_forced_versions_total:max > 0)
                  != last_over_time(image_set:healthimaging_forced_versions_total:max[1d] offset 1h)
                or
                  (
                      (image_set:healthimaging_forced_versions_total:max > 0)
                    unless
                      last_over_time(image_set:healthimaging_forced_versions_total:max[1d] offset 1h)
                  )
                  and
                    count_over_time(image_set:healthimaging_forced_versions_total:max[1h])
                    < on (datastore_id) group_left ()
                    count_over_time(datastore:healthimaging_up:max[1h])
              )
            |||,
            labels: {
              severity: 'warning',
            },
            annotations: {
              summary: 'Forced override in image set {{ $labels.image_set_id }} of data store {{ $labels.datastore_id }}',
              description: 'A new version of image set {{ $labels.image_set_id }} in data store {{ $labels.datastore_id }} was created with force=true within the last hour: the copy or update bypassed the Patient/Study/Series consistency checks.',
            },
          },
        ]),
      },
    ],
  },
}

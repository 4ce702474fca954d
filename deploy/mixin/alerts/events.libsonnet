// Event alerts: a version of an image set failed (COPY_FAILED, UPDATE_FAILED, IMPORT_FAILED) or
// was forced. docs/alerting.md explains every alert; docs/runbooks.md has one section per alert.
//
// They page once per failure. They key on timestamps the exporter persists and exports,
// healthimaging_image_set_last_failure_timestamp_seconds and
// healthimaging_image_set_last_forced_version_timestamp_seconds: the Unix time at which it
// counted the image set's last failed (or forced) version; never set by a baseline. An alert
// fires while that time is less than one hour old (keep `[1h]` and `3600` equal if you change
// the window), and nothing else matters:
//   - max_over_time over the window, not the instant value: a scrape gap of any length up to
//     the window (exporter restart, kill -9, node drain), and a Prometheus restart, leave the
//     earlier samples in the window, so the alert neither resolves nor fires anew;
//   - max by (datastore_id, image_set_id, workflow_status): the series of a new pod (new
//     instance label) or of the shard that owns a moved image set is the same alert;
//   - the first failure of an image set (a new series) and a later failure of one with an old
//     series fire alike, and a Prometheus without history (new, or TSDB lost) pages only the
//     failures counted within the last hour.
// No `for:` (a page is not delayed) and no keep_firing_for (its state is lost when Prometheus
// restarts; the window here comes from the data). No recording rules either: the alerts read
// the exporter's series directly. docs/alerting.md explains the choice and the versions
// supported (Prometheus 2.42 to 3.x, Alertmanager 0.25 or newer).
//
// The annotations console_url and command come from alerts.libsonnet (imageSetAnnotations).
// The failure alerts add `reason`, the bounded code of the failed version's message
// (INVALID_REQUEST, ..., or other), looked up with `query` in
// healthimaging_image_set_last_failure_info: an annotation, never a label, so a change of
// reason can neither split an alert in two nor page again (Alertmanager notifies on changes of
// the alerts' labels, not of their annotations). The instant series is preferred (the image
// set's latest failure in that status); `or on ()` falls back to the last hour's samples
// during a scrape gap; `unknown` when the exporter does not export it (per_image_set: none,
// or an older exporter). `%%[1]s` is Go's printf verb with an argument index.
local reason = |||
  {{ with printf `max by (reason) (healthimaging_image_set_last_failure_info{datastore_id='%%[1]s',image_set_id='%%[2]s',workflow_status='%%[3]s',%(exporterSelector)s}) or on () max by (reason) (last_over_time(healthimaging_image_set_last_failure_info{datastore_id='%%[1]s',image_set_id='%%[2]s',workflow_status='%%[3]s',%(exporterSelector)s}[1h]))` $labels.datastore_id $labels.image_set_id $labels.workflow_status | query }}{{ . | first | label `reason` }}{{ else }}unknown{{ end }}
|||;

{
  local eventAnnotations = $.imageSetAnnotations,
  local failureAnnotations = eventAnnotations {
    reason: std.rstripChars(reason, '\n') % $._config,
  },

  prometheusAlerts+:: {
    groups+: [
      {
        name: 'healthimaging-exporter.events',
        rules: std.map($.withRunbook, [
          {
            alert: 'HealthImagingCopyFailed',
            expr: |||
              max by (datastore_id, image_set_id, workflow_status) (
                max_over_time(healthimaging_image_set_last_failure_timestamp_seconds{workflow_status="COPY_FAILED",%(exporterSelector)s}[1h])
              ) > time() - 3600
            ||| % $._config,
            labels: {
              severity: 'critical',
            },
            annotations: {
              summary: 'COPY_FAILED version in image set {{ $labels.image_set_id }} of data store {{ $labels.datastore_id }}',
              description: 'A version of image set {{ $labels.image_set_id }} in data store {{ $labels.datastore_id }} entered COPY_FAILED (counted at {{ $value | humanizeTimestamp }}); the copy did not complete.',
            } + failureAnnotations,
          },
          {
            alert: 'HealthImagingUpdateOrImportFailed',
            expr: |||
              max by (datastore_id, image_set_id, workflow_status) (
                max_over_time(healthimaging_image_set_last_failure_timestamp_seconds{workflow_status=~"UPDATE_FAILED|IMPORT_FAILED",%(exporterSelector)s}[1h])
              ) > time() - 3600
            ||| % $._config,
            labels: {
              severity: 'critical',
            },
            annotations: {
              summary: '{{ $labels.workflow_status }} version in image set {{ $labels.image_set_id }} of data store {{ $labels.datastore_id }}',
              description: 'A version of image set {{ $labels.image_set_id }} in data store {{ $labels.datastore_id }} entered {{ $labels.workflow_status }} (counted at {{ $value | humanizeTimestamp }}).',
            } + failureAnnotations,
          },
          {
            alert: 'HealthImagingForcedOverride',
            expr: |||
              max by (datastore_id, image_set_id) (
                max_over_time(healthimaging_image_set_last_forced_version_timestamp_seconds{%(exporterSelector)s}[1h])
              ) > time() - 3600
            ||| % $._config,
            labels: {
              severity: 'warning',
            },
            annotations: {
              summary: 'Forced override in image set {{ $labels.image_set_id }} of data store {{ $labels.datastore_id }}',
              description: 'A new version of image set {{ $labels.image_set_id }} in data store {{ $labels.datastore_id }} was created with force=true (counted at {{ $value | humanizeTimestamp }}): the copy or update bypassed the Patient/Study/Series consistency checks.',
            } + eventAnnotations,
          },
        ]),
      },
    ],
  },
}

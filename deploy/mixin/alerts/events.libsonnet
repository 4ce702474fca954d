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
// The annotations console_url and command look the data store's region up in
// healthimaging_datastore_info with `query` (the region is not an alert label); without it
// (an older exporter) the link lets the console choose the region and the command has no
// --region. `%%s` is Go's printf verb, escaped for jsonnet's `%` formatting.
local region = |||
  printf `max by (region) (last_over_time(healthimaging_datastore_info{datastore_id='%%s',%(exporterSelector)s}[1d]))` $labels.datastore_id | query
|||;

{
  local eventAnnotations = {
    console_url: std.rstripChars(|||
      {{ with %(region)s }}{{ with . | first | label `region` }}https://{{ . }}.console.aws.amazon.com/medical-imaging/home?region={{ . }}#/dataStores/{{ $labels.datastore_id }}/imageSets/{{ $labels.image_set_id }}{{ end }}{{ else }}https://console.aws.amazon.com/medical-imaging/home#/dataStores/{{ $labels.datastore_id }}/imageSets/{{ $labels.image_set_id }}{{ end }}
    |||, '\n') % { region: std.rstripChars(region % $._config, '\n') },
    command: std.rstripChars(|||
      aws medical-imaging list-image-set-versions {{ with %(region)s }}{{ with . | first | label `region` }}--region {{ . }} {{ end }}{{ end }}--datastore-id {{ $labels.datastore_id }} --image-set-id {{ $labels.image_set_id }}
    |||, '\n') % { region: std.rstripChars(region % $._config, '\n') },
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
            } + eventAnnotations,
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
            } + eventAnnotations,
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

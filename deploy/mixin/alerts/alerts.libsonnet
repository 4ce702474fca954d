(import 'events.libsonnet') +
(import 'workflows.libsonnet') +
(import 'health.libsonnet') +
{
  // Adds the alert's section of docs/runbooks.md (its anchor is the lower-cased name).
  withRunbook:: function(rule) rule {
    annotations+: {
      runbook_url: '%s#%s' % [$._config.runbookURLBase, std.asciiLower(rule.alert)],
    },
  },

  // Annotation templates shared by the alerts about an image set. console_url and command look
  // the data store's region up in healthimaging_datastore_info with `query` (the region is not
  // an alert label); without it (an older exporter) the link lets the console choose the region
  // and the command has no --region. `%%s` is Go's printf verb, escaped for jsonnet's `%`
  // formatting.
  local region = std.rstripChars(|||
    printf `max by (region) (last_over_time(healthimaging_datastore_info{datastore_id='%%s',%(exporterSelector)s}[1d]))` $labels.datastore_id | query
  |||, '\n') % $._config,
  local withRegion(template) = std.rstripChars(template, '\n') % { region: region },
  imageSetAnnotations:: {
    console_url: withRegion(|||
      {{ with %(region)s }}{{ with . | first | label `region` }}https://{{ . }}.console.aws.amazon.com/medical-imaging/home?region={{ . }}#/dataStores/{{ $labels.datastore_id }}/imageSets/{{ $labels.image_set_id }}{{ end }}{{ else }}https://console.aws.amazon.com/medical-imaging/home#/dataStores/{{ $labels.datastore_id }}/imageSets/{{ $labels.image_set_id }}{{ end }}
    |||),
    command: withRegion(|||
      aws medical-imaging list-image-set-versions {{ with %(region)s }}{{ with . | first | label `region` }}--region {{ . }} {{ end }}{{ end }}--datastore-id {{ $labels.datastore_id }} --image-set-id {{ $labels.image_set_id }}
    |||),
  },
  // The same for an alert that names an image set only when per-image-set series are exported
  // (HealthImagingWorkflowStuck): without image_set_id, the data store's page and a search of
  // its image sets by last change.
  maybeImageSetAnnotations:: {
    console_url: withRegion(|||
      {{ with %(region)s }}{{ with . | first | label `region` }}https://{{ . }}.console.aws.amazon.com/medical-imaging/home?region={{ . }}{{ end }}{{ else }}https://console.aws.amazon.com/medical-imaging/home{{ end }}#/dataStores/{{ $labels.datastore_id }}{{ with $labels.image_set_id }}/imageSets/{{ . }}{{ end }}
    |||),
    command: withRegion(|||
      aws medical-imaging {{ if $labels.image_set_id }}list-image-set-versions{{ else }}search-image-sets{{ end }} {{ with %(region)s }}{{ with . | first | label `region` }}--region {{ . }} {{ end }}{{ end }}--datastore-id {{ $labels.datastore_id }}{{ with $labels.image_set_id }} --image-set-id {{ . }}{{ end }}
    |||),
  },
}

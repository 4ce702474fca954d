// Import jobs and data store lifecycle (issue 14): an import job failed, an import completed
// with failed files, an import is stuck, a data store is not ACTIVE. docs/alerting.md explains
// every alert; docs/runbooks.md has one section per alert.
//
// Import failures are counted per data store, not per job (a job id is not a label), in
// persisted counters that a restart resumes where it was (healthimaging_import_jobs_ended_total
// {job_status="FAILED"}, healthimaging_import_jobs_with_failed_files_total). An alert fires
// while something was counted within the last importAlertWindow (1h), one alert per data store
// (more jobs failing within the window keep the same alert: one page), by any of:
//   1. the highest value of the data store's counter within the window exceeds its highest value
//      over the importAlertHistory (1d) before the window: max_over_time and max by
//      (datastore_id) over every series, so a scrape gap, an exporter restart, a new pod (new
//      instance label) or a Prometheus restart neither resolves the alert nor fires it anew;
//      a failure counted while no process was scraped is still found once one is;
//   2. an increase within one series over the window: a counter reset (a lost state file) and a
//      Prometheus with no history before the window (new, or TSDB lost) still page a failure
//      counted while they watched, and never page old failures (increase() of a series is 0
//      until it grows);
//   3. a counter series seen for the first time within the window with a value above 0 while
//      the data store was already watched before it (healthimaging_up over the history): the
//      first-ever series of a data store whose first sample already counts a failure. The
//      exporter exports these counters at 0 from the baseline on, so this is the rare case of a
//      failure counted before the first scrape; a Prometheus without history pages nothing old.
// No `for:` (a page is not delayed). The value is the number of jobs counted in the window (or
// the counter's value, for 3).
local region = |||
  printf `max by (region) (last_over_time(healthimaging_datastore_info{datastore_id='%%s',%(exporterSelector)s}[1d]))` $labels.datastore_id | query
|||;

{
  local cfg = $._config,
  local counted(metric) = |||
    (
        max by (datastore_id) (max_over_time(%(metric)s[%(window)s]))
      -
        max by (datastore_id) (max_over_time(%(metric)s[%(history)s] offset %(window)s))
      > 0
    )
    or
    (
      sum by (datastore_id) (increase(%(metric)s[%(window)s])) > 0
    )
    or
    (
        max by (datastore_id) (max_over_time(%(metric)s[%(window)s])) > 0
      unless on (datastore_id)
        max by (datastore_id) (max_over_time(%(metric)s[%(history)s] offset %(window)s))
      and on (datastore_id)
        max by (datastore_id) (max_over_time(healthimaging_up{%(selector)s}[%(history)s] offset %(window)s))
    )
  ||| % {
    metric: metric,
    window: cfg.importAlertWindow,
    history: cfg.importAlertHistory,
    selector: cfg.exporterSelector,
  },
  // The reasons of the failures counted in the window, for the description: the same comparison
  // as `counted`, per reason (a reason's series first appears with its first failure).
  local reasonsCounted = std.rstripChars(std.strReplace(|||
    max by (reason) (max_over_time(F[%(window)s])) > max by (reason) (max_over_time(F[%(history)s] offset %(window)s)) or max by (reason) (max_over_time(F[%(window)s])) unless max by (reason) (max_over_time(F[%(history)s] offset %(window)s))
  |||, 'F', "healthimaging_import_job_failures_total{datastore_id='%%s',%(selector)s}"), '\n') % {
    window: cfg.importAlertWindow,
    history: cfg.importAlertHistory,
    selector: cfg.exporterSelector,
  },
  local withRegion(template) =
    std.rstripChars(template, '\n') % { region: std.rstripChars(region % cfg, '\n') },
  local importAnnotations(status) = {
    console_url: withRegion(|||
      {{ with %(region)s }}{{ with . | first | label `region` }}https://{{ . }}.console.aws.amazon.com/medical-imaging/home?region={{ . }}{{ end }}{{ else }}https://console.aws.amazon.com/medical-imaging/home{{ end }}#/dataStores/{{ $labels.datastore_id }}
    |||),
    command: withRegion(|||
      aws medical-imaging list-dicom-import-jobs {{ with %(region)s }}{{ with . | first | label `region` }}--region {{ . }} {{ end }}{{ end }}--datastore-id {{ $labels.datastore_id }}%(status)s
    ||| % { region: '%(region)s', status: status }),
  },

  prometheusAlerts+:: {
    groups+: [
      {
        name: 'healthimaging-exporter.imports',
        rules: std.map($.withRunbook, [
          {
            alert: 'HealthImagingImportJobFailed',
            expr: counted('healthimaging_import_jobs_ended_total{job_status="FAILED",%(exporterSelector)s}' % cfg),
            labels: {
              severity: 'critical',
            },
            annotations: {
              summary: 'DICOM import job failed in data store {{ $labels.datastore_id }}',
              description: '{{ printf "%%.0f" $value }} DICOM import job(s) of data store {{ $labels.datastore_id }} ended FAILED in the last %(window)s; their files were not imported. Reasons counted in that time: {{ range $i, $s := query (printf `%(reasons)s` $labels.datastore_id $labels.datastore_id $labels.datastore_id $labels.datastore_id) | sortByLabel "reason" }}{{ if $i }}, {{ end }}{{ $s.Labels.reason }}{{ else }}none recorded{{ end }}.' % { window: cfg.importAlertWindow, reasons: reasonsCounted },
            } + importAnnotations(' --job-status FAILED'),
          },
          {
            alert: 'HealthImagingImportCompletedWithFailedFiles',
            expr: counted('healthimaging_import_jobs_with_failed_files_total{%(exporterSelector)s}' % cfg),
            labels: {
              severity: 'warning',
            },
            annotations: {
              summary: 'DICOM import job completed with failed files in data store {{ $labels.datastore_id }}',
              description: '{{ printf "%%.0f" $value }} DICOM import job(s) of data store {{ $labels.datastore_id }} ended COMPLETED in the last %(window)s with files that were not imported (from the jobs\' output manifests in S3); the job status alone does not show it.' % { window: cfg.importAlertWindow },
            } + importAnnotations(' --job-status COMPLETED'),
          },
          // The oldest job per active status, older than its threshold. last_over_time over
          // importStuckLookback: a scrape gap shorter than it neither resolves nor re-pages
          // the alert. The oldest timestamp series vanishes when no job is in the status; the
          // job count (healthimaging_import_jobs, every status exported, 0 included) at 0 in
          // the latest scrape of every process resolves it at once instead of one window later.
          {
            alert: 'HealthImagingImportStuck',
            expr: |||
              (
                  time() - min by (datastore_id, job_status) (
                    last_over_time(healthimaging_import_oldest_active_job_submitted_timestamp_seconds{job_status="SUBMITTED",%(exporterSelector)s}[%(importStuckLookback)s])
                  ) > %(importStuckSubmittedSeconds)d
                or
                  time() - min by (datastore_id, job_status) (
                    last_over_time(healthimaging_import_oldest_active_job_submitted_timestamp_seconds{job_status="IN_PROGRESS",%(exporterSelector)s}[%(importStuckLookback)s])
                  ) > %(importStuckInProgressSeconds)d
              )
              unless on (datastore_id, job_status)
                (max by (datastore_id, job_status) (healthimaging_import_jobs{%(exporterSelector)s}) == 0)
            ||| % cfg,
            labels: {
              severity: 'warning',
            },
            annotations: {
              summary: 'DICOM import job {{ $labels.job_status }} for {{ $value | humanizeDuration }} in data store {{ $labels.datastore_id }}',
              description: 'The oldest DICOM import job of data store {{ $labels.datastore_id }} in status {{ $labels.job_status }} was submitted {{ $value | humanizeDuration }} ago (thresholds: SUBMITTED %(submitted)s s, IN_PROGRESS %(inProgress)s s); the import may never finish.' % { submitted: cfg.importStuckSubmittedSeconds, inProgress: cfg.importStuckInProgressSeconds },
            } + importAnnotations('{{ with $labels.job_status }} --job-status {{ . }}{{ end }}'),
          },
          // The status gauge is 1 for the current status. last_over_time over 15m: a scrape gap
          // neither resolves nor re-pages; a return to ACTIVE sets the old status's series to 0
          // and resolves at once. The exporter reads the status every
          // discovery.datastore_status_seconds (300 s), which is the detection delay.
          {
            alert: 'HealthImagingDatastoreDeleting',
            expr: |||
              max by (datastore_id, datastore_status) (
                last_over_time(healthimaging_datastore_status{datastore_status=~"DELETING|DELETED",%(exporterSelector)s}[15m])
              ) == 1
            ||| % cfg,
            labels: {
              severity: 'critical',
            },
            annotations: {
              summary: 'Data store {{ $labels.datastore_id }} is {{ $labels.datastore_status }}',
              description: 'Data store {{ $labels.datastore_id }}, which the exporter watches, is {{ $labels.datastore_status }}: its image sets are being or have been deleted, and it is no longer polled.',
            },
          },
          // CREATING is normal for minutes after CreateDatastore: `for` leaves it that long.
          {
            alert: 'HealthImagingDatastoreNotActive',
            expr: |||
              max by (datastore_id, datastore_status) (
                last_over_time(healthimaging_datastore_status{datastore_status!~"ACTIVE|DELETING|DELETED",%(exporterSelector)s}[15m])
              ) == 1
            ||| % cfg,
            'for': cfg.datastoreNotActiveFor,
            labels: {
              severity: 'warning',
            },
            annotations: {
              summary: 'Data store {{ $labels.datastore_id }} is {{ $labels.datastore_status }}, not ACTIVE',
              description: 'Data store {{ $labels.datastore_id }} has been {{ $labels.datastore_status }} for %(for)s; it has no image sets to poll until it is ACTIVE (CREATE_FAILED: it never will be).' % { 'for': cfg.datastoreNotActiveFor },
            },
          },
        ]),
      },
    ],
  },
}

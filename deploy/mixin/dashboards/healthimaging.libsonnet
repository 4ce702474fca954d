// The exporter's dashboard: image sets and versions, failures and forced overrides, poll
// health, the AWS API budget, backfill and exporter processes. Variables: data source,
// cluster (shown with _config.showMultiCluster), job, instance and data store; every query
// filters on them.
local g = import 'panels.libsonnet';

{
  grafanaDashboards+:: {
    local cfg = $._config,
    // Selectors of every query: per process (`p`), and per data store too (`d`).
    local p = g.matchers([
      '%s=~"$cluster"' % cfg.clusterLabel,
      'job=~"$job"',
      'instance=~"$instance"',
      cfg.exporterSelector,
    ]),
    local s = { p: p, d: p + ',datastore_id=~"$datastore_id"' },
    local failed = 'healthimaging_failed_versions_total{%(d)s}' % s,
    local forced = 'healthimaging_forced_versions_total{%(d)s}' % s,
    // New events in a window (increase, or a series that did not exist before it).
    local newIn(series, window) =
      'increase(%s[%s]) > 0 or (%s unless %s offset %s)' % [series, window, series, series, window],
    local byImageSet = 'datastore_id, image_set_id',
    local byFailure = 'datastore_id, image_set_id, workflow_status',
    local short = { unit: 'short' },
    local thresholds(color) = {
      unit: 'short',
      thresholds: { mode: 'absolute', steps: [{ color: 'green', value: null }, { color: color, value: 1 }] },
    },
    local stat(title, description, x, targets, defaults=short) =
      g.panel('stat', title, description, g.pos(x, 1, 4, 4), targets, defaults),
    local dashedB(property) = {
      matcher: { id: 'byFrameRefID', options: 'B' },
      properties: property,
    },
    local organize(rename, exclude={}) = [
      { id: 'merge', options: {} },
      { id: 'organize', options: { excludeByName: { Time: true } + exclude, renameByName: rename } },
    ],
    local sortBy(field) = { id: 'sortBy', options: { sort: [{ field: field, desc: true }] } },
    local lastEventAt(series, by) =
      '1000 * max by (%s) (last_over_time(timestamp(%s)[$__range:$__interval]))'
      % [by, newIn(series, '$__rate_interval')],
    local dateColumn(name) = {
      matcher: { id: 'byName', options: name },
      properties: [{ id: 'unit', value: 'dateTimeAsIso' }],
    },

    'healthimaging-exporter.json': {
      title: cfg.dashboardTitle,
      uid: cfg.dashboardUID,
      description: 'Image set versions, failures, forced overrides and poll health from healthimaging-exporter.',
      tags: cfg.dashboardTags,
      editable: true,
      graphTooltip: 1,
      schemaVersion: 39,
      version: 1,
      refresh: cfg.dashboardRefresh,
      time: { from: 'now-6h', to: 'now' },
      timepicker: {},
      timezone: '',
      fiscalYearStartMonth: 0,
      liveNow: false,
      annotations: {
        list: [
          {
            builtIn: 1,
            datasource: { type: 'grafana', uid: '-- Grafana --' },
            enable: true,
            hide: true,
            iconColor: 'rgba(0, 211, 255, 1)',
            name: 'Annotations & Alerts',
            type: 'dashboard',
          },
          {
            datasource: g.datasource,
            enable: true,
            iconColor: 'red',
            name: 'HealthImaging alerts',
            expr: 'ALERTS{alertname=~"HealthImaging.*",alertstate="firing"}',
            step: '60s',
            titleFormat: '{{alertname}}',
            textFormat: '{{datastore_id}} {{image_set_id}}',
            useValueForTime: false,
          },
        ],
      },
      links: [
        {
          title: 'Runbooks',
          type: 'link',
          url: cfg.runbookURLBase,
          targetBlank: true,
          icon: 'doc',
          tags: [],
          asDropdown: false,
          includeVars: false,
          keepTime: false,
          tooltip: '',
        },
      ],
      templating: {
        list: [
          {
            name: 'datasource',
            label: 'Data source',
            type: 'datasource',
            query: 'prometheus',
            current: {},
            hide: 0,
            includeAll: false,
            multi: false,
            options: [],
            refresh: 1,
            regex: '',
            skipUrlSync: false,
          },
          // "All" is .* so that series without a cluster label match it.
          g.queryVariable(
            'cluster',
            'Cluster',
            'label_values(healthimaging_exporter_build_info%s, %s)'
            % [g.selector([cfg.exporterSelector]), cfg.clusterLabel],
            '.*',
            hide=if cfg.showMultiCluster then 0 else 2,
          ),
          g.queryVariable(
            'job',
            'Job',
            'label_values(healthimaging_exporter_build_info{%s}, job)'
            % g.matchers(['%s=~"$cluster"' % cfg.clusterLabel, cfg.exporterSelector]),
            '.+',
          ),
          g.queryVariable(
            'instance',
            'Instance',
            'label_values(healthimaging_exporter_build_info{%s}, instance)'
            % g.matchers(['%s=~"$cluster"' % cfg.clusterLabel, 'job=~"$job"', cfg.exporterSelector]),
            '.+',
          ),
          g.queryVariable(
            'datastore_id',
            'Data store',
            'label_values(healthimaging_up{%(p)s}, datastore_id)' % s,
            '.+',
          ),
        ],
      },
      panels: g.withIds([
        g.row('Overview', 0),
        stat(
          'Image sets tracked',
          'healthimaging_datastore_image_sets summed over the selected data stores.',
          0,
          [g.target('A', 'sum(healthimaging_datastore_image_sets{%(d)s})' % s, 'image sets')],
        ),
        stat(
          'Data stores up',
          'Data stores whose last poll fully succeeded (healthimaging_up) out of those selected.',
          4,
          [
            g.target('A', 'sum(healthimaging_up{%(d)s})' % s, 'up'),
            g.target('B', 'count(healthimaging_up{%(d)s})' % s, 'total'),
          ],
        ),
        stat(
          'Failed versions in range',
          "Versions that entered COPY_FAILED, UPDATE_FAILED or IMPORT_FAILED in the dashboard's time range, including the first failure of an image set.",
          8,
          [g.target('A', 'sum(max by (%s) (%s)) or vector(0)' % [byFailure, newIn(failed, '$__range')], 'failed')],
          thresholds('red'),
        ),
        stat(
          'Forced overrides in range',
          "New versions created with a forced override (consistency checks bypassed) in the dashboard's time range.",
          12,
          [g.target('A', 'sum(max by (%s) (%s)) or vector(0)' % [byImageSet, newIn(forced, '$__range')], 'forced')],
          thresholds('orange'),
        ),
        stat(
          'Oldest successful poll',
          'Time since the least recent fully successful poll among the selected data stores.',
          16,
          [g.target('A', 'max(time() - healthimaging_exporter_last_successful_poll_timestamp_seconds{%(d)s})' % s, 'age')],
          { unit: 's' },
        ),
        stat(
          'Backfills complete',
          'Data stores whose inventory backfill has finished, out of those selected.',
          20,
          [
            g.target('A', 'sum(healthimaging_datastore_backfill_complete{%(d)s})' % s, 'complete'),
            g.target('B', 'count(healthimaging_datastore_backfill_complete{%(d)s})' % s, 'total'),
          ],
        ),

        g.row('Image sets and versions', 5),
        g.panel(
          'timeseries',
          'Image sets tracked per data store',
          'Image sets tracked per data store.',
          g.pos(0, 6, 8, 8),
          [g.target('A', 'sum by (datastore_id) (healthimaging_datastore_image_sets{%(d)s})' % s, '{{datastore_id}}')],
          short,
        ),
        g.panel(
          'timeseries',
          'Versions by workflow status',
          'Versions of all tracked image sets, by workflow status.',
          g.pos(8, 6, 8, 8),
          [g.target('A', 'sum by (workflow_status) (healthimaging_datastore_versions_by_workflow_status{%(d)s})' % s, '{{workflow_status}}')],
          short,
        ),
        g.panel(
          'timeseries',
          'New versions by workflow status',
          'Versions first seen by a diff, per interval, by workflow status.',
          g.pos(16, 6, 8, 8),
          [g.target('A', 'sum by (workflow_status) (increase(healthimaging_new_versions_total{%(d)s}[$__rate_interval]))' % s, '{{workflow_status}}')],
          short,
        ),

        g.row('Failures and forced overrides', 14),
        g.panel(
          'table',
          'Recent failures',
          "Image sets with versions that entered a failed workflow status in the dashboard's time range, with the time of the last failure seen (to the panel's resolution).",
          g.pos(0, 15, 12, 9),
          [
            g.tableTarget('A', 'max by (%s) (%s)' % [byFailure, newIn(failed, '$__range')]),
            g.tableTarget('B', lastEventAt(failed, byFailure)),
          ],
          overrides=[dateColumn('Last failure')],
        ) {
          transformations: organize({
            'Value #A': 'Failures in range',
            'Value #B': 'Last failure',
            datastore_id: 'Data store',
            image_set_id: 'Image set',
            workflow_status: 'Status',
          }) + [sortBy('Last failure')],
        },
        g.panel(
          'table',
          'Recent forced overrides',
          "Image sets with new versions created with a forced override in the dashboard's time range, with the time of the last one seen.",
          g.pos(12, 15, 12, 9),
          [
            g.tableTarget('A', 'max by (%s) (%s)' % [byImageSet, newIn(forced, '$__range')]),
            g.tableTarget('B', lastEventAt(forced, byImageSet)),
          ],
          overrides=[dateColumn('Last forced')],
        ) {
          transformations: organize({
            'Value #A': 'Forced in range',
            'Value #B': 'Last forced',
            datastore_id: 'Data store',
            image_set_id: 'Image set',
          }) + [sortBy('Last forced')],
        },
        g.panel(
          'timeseries',
          'Failed versions in failed states',
          'Versions currently in a failed workflow status, per data store and status.',
          g.pos(0, 24, 12, 8),
          [g.target('A', 'sum by (datastore_id, workflow_status) (healthimaging_datastore_versions_by_workflow_status{%(d)s,workflow_status=~".*_FAILED"})' % s, '{{datastore_id}} {{workflow_status}}')],
          short,
        ),
        g.panel(
          'timeseries',
          'Forced versions',
          'Versions with a forced override, all tracked image sets, per data store.',
          g.pos(12, 24, 12, 8),
          [g.target('A', 'sum by (datastore_id) (healthimaging_datastore_forced_versions{%(d)s})' % s, '{{datastore_id}}')],
          short,
        ),

        g.row('Workflows in progress', 32),
        g.panel(
          'timeseries',
          'In-progress versions by status',
          'Versions of all tracked image sets in an in-progress workflow status (COPYING, UPDATING, IMPORTING, DELETING, ...), by status.',
          g.pos(0, 33, 8, 8),
          [g.target('A', 'sum by (workflow_status) (healthimaging_datastore_in_progress_versions{%(d)s})' % s, '{{workflow_status}}')],
          short,
        ),
        g.panel(
          'timeseries',
          'Oldest in-progress version age',
          'How long the oldest version of each data store has been in each in-progress status; HealthImagingWorkflowStuck pages above the dashed line.',
          g.pos(8, 33, 8, 8),
          [g.target('A', 'time() - min by (datastore_id, workflow_status) (healthimaging_datastore_oldest_in_progress_version_timestamp_seconds{%(d)s})' % s, '{{datastore_id}} {{workflow_status}}')],
          {
            unit: 's',
            custom: { thresholdsStyle: { mode: 'dashed' } },
            thresholds: { mode: 'absolute', steps: [{ color: 'green', value: null }, { color: 'red', value: cfg.stuckWorkflowThresholdSeconds }] },
          },
        ),
        g.panel(
          'timeseries',
          'Failures by reason',
          "Versions counted entering a failed workflow status, per interval, by data store and reason (the failed version's message's leading code, or other).",
          g.pos(16, 33, 8, 8),
          [g.target('A', 'sum by (datastore_id, reason) (%s)' % newIn('healthimaging_failures_total{%(d)s}' % s, '$__rate_interval'), '{{datastore_id}} {{reason}}')],
          short { custom: { drawStyle: 'bars' } },
        ),
        g.panel(
          'table',
          'Image sets in progress longest',
          'The image sets whose versions have been in an in-progress status longest (needs per-image-set series: metrics.per_image_set all or failures_only).',
          g.pos(0, 41, 24, 9),
          [g.tableTarget('A', 'topk(20, time() - min by (%s) (healthimaging_image_set_in_progress_since_timestamp_seconds{%s}))' % [byFailure, s.d])],
          overrides=[{ matcher: { id: 'byName', options: 'In progress for' }, properties: [{ id: 'unit', value: 's' }] }],
        ) {
          transformations: organize({
            Value: 'In progress for',
            datastore_id: 'Data store',
            image_set_id: 'Image set',
            workflow_status: 'Status',
          }) + [sortBy('In progress for')],
        },

        g.row('Poll health', 50),
        g.panel(
          'state-timeline',
          'Data store up',
          '1 when the last poll of the data store fully succeeded.',
          g.pos(0, 51, 8, 8),
          [g.target('A', 'healthimaging_up{%(d)s}' % s, '{{datastore_id}}')],
          { mappings: [{ type: 'value', options: { '0': { text: 'down', color: 'red' }, '1': { text: 'up', color: 'green' } } }] },
        ),
        g.panel(
          'timeseries',
          'Time since last successful poll',
          "Seconds since each data store's last fully successful poll.",
          g.pos(8, 51, 8, 8),
          [g.target('A', 'time() - healthimaging_exporter_last_successful_poll_timestamp_seconds{%(d)s}' % s, '{{datastore_id}} {{instance}}')],
          { unit: 's' },
        ),
        g.panel(
          'timeseries',
          'Poll duration',
          'Quantiles of the duration of a whole poll cycle (all data stores of the process).',
          g.pos(16, 51, 8, 8),
          [
            g.target(
              q.ref,
              'histogram_quantile(%s, sum by (le) (rate(healthimaging_exporter_poll_duration_seconds_bucket{%s}[$__rate_interval])))' % [q.q, p],
              q.legend,
            )
            for q in [
              { ref: 'A', q: '0.5', legend: 'p50' },
              { ref: 'B', q: '0.9', legend: 'p90' },
              { ref: 'C', q: '0.99', legend: 'p99' },
            ]
          ],
          { unit: 's' },
        ),
        g.panel(
          'timeseries',
          'Poll errors by reason',
          'Image sets or data stores whose poll failed, per second, by data store and reason.',
          g.pos(0, 59, 24, 7),
          [g.target('A', 'sum by (datastore_id, reason) (rate(healthimaging_exporter_poll_errors_total{%(d)s}[$__rate_interval]))' % s, '{{datastore_id}} {{reason}}')],
          { unit: 'ops' },
        ),

        g.row('AWS HealthImaging API', 66),
        g.panel(
          'timeseries',
          'API requests by outcome vs budget',
          'HTTP attempts to AWS HealthImaging per second by operation and outcome (retries included), against the client-side request budget.',
          g.pos(0, 67, 12, 8),
          [
            g.target('A', 'sum by (operation, outcome) (rate(healthimaging_exporter_api_requests_total{%(p)s}[$__rate_interval]))' % s, '{{operation}} {{outcome}}'),
            g.target('B', 'sum by (operation) (healthimaging_exporter_rate_budget_requests_per_second{%(p)s})' % s, '{{operation}} budget'),
          ],
          { unit: 'reqps' },
          [dashedB([{ id: 'custom.lineStyle', value: { fill: 'dash', dash: [10, 10] } }])],
        ),
        g.panel(
          'timeseries',
          'Throttling',
          'Throttled attempts per second, and the share of time spent waiting for the request budget, by operation.',
          g.pos(12, 67, 12, 8),
          [
            g.target('A', 'sum by (operation) (rate(healthimaging_exporter_api_requests_total{%(p)s,outcome="throttled"}[$__rate_interval]))' % s, '{{operation}} throttled/s'),
            g.target('B', 'sum by (operation) (rate(healthimaging_exporter_rate_budget_wait_seconds_total{%(p)s}[$__rate_interval]))' % s, '{{operation}} budget wait (s/s)'),
          ],
          short,
        ),

        g.row('Backfill and exporter', 75),
        g.panel(
          'timeseries',
          'Backfill progress',
          'Image sets listed so far by the inventory backfill, per data store; the line stops rising once the backfill is complete.',
          g.pos(0, 76, 12, 8),
          [
            g.target('A', 'healthimaging_datastore_backfill_image_sets{%(d)s}' % s, '{{datastore_id}}'),
            g.target('B', 'healthimaging_datastore_backfill_complete{%(d)s}' % s, '{{datastore_id}} complete'),
          ],
          short,
          [dashedB([{ id: 'custom.axisPlacement', value: 'right' }, { id: 'max', value: 1 }])],
        ),
        g.panel(
          'table',
          'Exporter processes',
          'Per process: version, shard, state store and configuration health.',
          g.pos(12, 76, 12, 8),
          [
            g.tableTarget('A', 'max by (instance, version) (healthimaging_exporter_build_info{%(p)s})' % s),
            g.tableTarget('B', 'max by (instance) (healthimaging_exporter_shard_ordinal{%(p)s})' % s),
            g.tableTarget('C', 'max by (instance) (healthimaging_exporter_total_shards{%(p)s})' % s),
            g.tableTarget('D', 'max by (instance) (healthimaging_exporter_state_writable{%(p)s})' % s),
            g.tableTarget('E', 'max by (instance) (healthimaging_exporter_config_last_reload_successful{%(p)s})' % s),
            g.tableTarget('F', 'max by (instance) (rate(healthimaging_exporter_state_write_errors_total{%(p)s}[$__rate_interval]))' % s),
          ],
        ) {
          transformations: organize({
            instance: 'Instance',
            version: 'Version',
            'Value #B': 'Shard',
            'Value #C': 'Shards',
            'Value #D': 'State writable',
            'Value #E': 'Config reload OK',
            'Value #F': 'State write errors/s',
          }, { 'Value #A': true }),
        },
      ]),
    },
  },
}

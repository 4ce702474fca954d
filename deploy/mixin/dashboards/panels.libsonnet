// Small builders for the Grafana JSON of dashboards/*.libsonnet: the dashboard is written as
// plain Grafana JSON, without grafonnet (a jsonnet-bundler dependency the generation would have
// to download).
{
  datasource:: { type: 'prometheus', uid: '${datasource}' },

  // A PromQL target; tableTarget is an instant query shown as a table.
  target(refId, expr, legendFormat='')::
    { datasource: $.datasource, refId: refId, expr: expr, legendFormat: legendFormat },
  tableTarget(refId, expr)::
    $.target(refId, expr) { instant: true, range: false, format: 'table' },

  // targets: a list of exprs (refIds A, B, ... in order) or of target objects.
  panel(type, title, description, gridPos, targets, defaults={}, overrides=[]):: {
    type: type,
    title: title,
    description: description,
    datasource: $.datasource,
    gridPos: gridPos,
    targets: targets,
    fieldConfig: { defaults: defaults, overrides: overrides },
    options: {},
  },
  row(title, y):: {
    type: 'row',
    title: title,
    collapsed: false,
    gridPos: { h: 1, w: 24, x: 0, y: y },
    panels: [],
  },
  pos(x, y, w, h):: { h: h, w: w, x: x, y: y },

  // A multi-value query variable with "All".
  queryVariable(name, label, query, allValue, hide=0):: {
    name: name,
    label: label,
    type: 'query',
    datasource: $.datasource,
    definition: query,
    query: { query: query, refId: 'PrometheusVariableQueryEditor-VariableQuery', qryType: 1 },
    refresh: 2,
    multi: true,
    includeAll: true,
    allValue: allValue,
    current: { selected: true, text: ['All'], value: ['$__all'] },
    hide: hide,
    options: [],
    regex: '',
    skipUrlSync: false,
    sort: 1,
  },

  // Matchers joined for a selector; empty ones (an unset _config selector) are left out.
  matchers(list):: std.join(',', std.filter(function(m) m != '', list)),
  // The same in braces, or nothing when there is no matcher.
  selector(list):: if $.matchers(list) == '' then '' else '{%s}' % $.matchers(list),

  // Panel ids in order of appearance, from 1.
  withIds(panels):: std.mapWithIndex(function(i, p) p { id: i + 1 }, panels),
}

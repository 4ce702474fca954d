(import 'events.libsonnet') +
(import 'health.libsonnet') +
{
  // Adds the alert's section of docs/runbooks.md (its anchor is the lower-cased name).
  withRunbook:: function(rule) rule {
    annotations+: {
      runbook_url: '%s#%s' % [$._config.runbookURLBase, std.asciiLower(rule.alert)],
    },
  },
}

(import 'events.libsonnet')

(import 'healthimaging.libsonnet')

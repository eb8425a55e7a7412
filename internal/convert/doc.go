// Package convert turns the model's batches into pdata: metrics from one
// series store (flow and connection metrics alike: cumulative or delta,
// idle eviction and max_series, evictions counted), one log record per
// flow, and one span per connection side. It names nothing itself: every
// metric's name, description, unit and bucket bounds come from the Schema
// the receiver builds from metadata.yaml.
package convert

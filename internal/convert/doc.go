// Package convert turns flow batches into pdata: metrics with bounded,
// cumulative (or delta) series state, and one log record per flow. The
// telemetry schema lives here and in the receiver's metadata.yaml.
package convert

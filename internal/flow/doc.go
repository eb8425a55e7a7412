// Package flow is the model between the kernel and the converters: a Flow
// with its local and peer endpoints resolved from the kernel key, wall-clock
// times, and the Batch of one drain interval.
package flow

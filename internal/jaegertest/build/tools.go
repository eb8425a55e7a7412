//go:build tools

package build

import _ "github.com/jaegertracing/jaeger/cmd/jaeger"

package ginkgo

import (
	"context"
	"reflect"
)

// call calls fn with args; a first parameter of type context.Context that
// args do not supply gets a background context, as Ginkgo gives one.
func call(fn any, args []any) {
	v := reflect.ValueOf(fn)
	t := v.Type()
	in := make([]reflect.Value, 0, t.NumIn())
	ctxType := reflect.TypeOf((*context.Context)(nil)).Elem()
	if t.NumIn() > len(args) && t.In(0) == ctxType {
		in = append(in, reflect.ValueOf(context.Background()))
	}
	for _, a := range args {
		in = append(in, reflect.ValueOf(a))
	}
	v.Call(in)
}

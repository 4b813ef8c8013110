package encoders

import (
	"bytes"
	"errors"
)

// jsonrpcEncoder wraps the json object in a JSON-RPC 2.0 request.
type jsonrpcEncoder struct{}

func (jsonrpcEncoder) Name() string        { return "jsonrpc" }
func (jsonrpcEncoder) ContentType() string { return "application/json" }

var errNoMethod = errors.New("jsonrpc method is empty")

// Encode writes {"jsonrpc":"2.0","method":...,"params":{...},"id":...}.
// The id is always a string because it carries the delivery ID, which lets
// the receiver deduplicate retries.
func (jsonrpcEncoder) Encode(dst *bytes.Buffer, params []Param, opts Options) error {
	if opts.RPCMethod == "" {
		return errNoMethod
	}
	start := dst.Len()
	dst.WriteString(`{"jsonrpc":"2.0","method":`)
	writeJSONString(dst, opts.RPCMethod)
	dst.WriteString(`,"params":{`)
	if err := writeNested(dst, nestJSON, params, ""); err != nil {
		dst.Truncate(start)
		return err
	}
	dst.WriteString(`},"id":`)
	writeJSONString(dst, opts.RPCID)
	dst.WriteByte('}')
	return nil
}

func (jsonrpcEncoder) CheckNames(names []string, opts Options) error {
	if opts.RPCMethod == "" {
		return errNoMethod
	}
	return checkNestedNames(names, nil)
}

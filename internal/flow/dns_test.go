package flow

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// question builds a question section: the labels of name, then type and
// class (IN).
func question(name string, qtype uint16) []byte {
	var q []byte
	for _, l := range strings.Split(name, ".") {
		q = append(q, byte(len(l)))
		q = append(q, l...)
	}
	return append(q, 0, byte(qtype>>8), byte(qtype), 0, 1)
}

// TestParseQuestion: names as RFC 1035 encodes them, a compression pointer
// to an earlier name of the section, the longest name, and what is not a
// question.
func TestParseQuestion(t *testing.T) {
	name, qtype, qclass, err := ParseQuestion(question("Web.Shop.svc.cluster.local", 28))
	require.NoError(t, err)
	require.Equal(t, "web.shop.svc.cluster.local", name)
	require.EqualValues(t, 28, qtype)
	require.EqualValues(t, 1, qclass)

	// "www" then a pointer to offset 12+4 of the message: "example.com".
	q := []byte{3, 'w', 'w', 'w', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0}
	q = append(q, 3, 'a', 'p', 'i', 0xc0, 12+4, 0, 1, 0, 1) // a second name, compressed (offset 17 of q)
	_, _, _, err = ParseQuestion(q[17:])
	require.ErrorIs(t, err, ErrQuestion, "a pointer outside the bytes given")
	name, qtype, _, err = parseQuestionFrom(q, 17)
	require.NoError(t, err)
	require.Equal(t, "api.example.com", name)
	require.EqualValues(t, 1, qtype)

	long := strings.Repeat(strings.Repeat("a", 63)+".", 3) + strings.Repeat("b", 61) // 253 characters
	name, _, _, err = ParseQuestion(question(long, 1))
	require.NoError(t, err)
	require.Len(t, name, 253)
	_, _, _, err = ParseQuestion(question(long+"c", 1))
	require.ErrorIs(t, err, ErrQuestion, "254 characters")

	name, _, _, err = ParseQuestion([]byte{0, 0, 2, 0, 1})
	require.NoError(t, err)
	require.Equal(t, ".", name, "the root")
	for _, bad := range [][]byte{nil, {3, 'w', 'w'}, {0xc0, 12}, {0x40, 1, 0, 0, 1, 0, 1}, {3, 'w', 'w', 'w', 0, 0}} {
		_, _, _, err = ParseQuestion(bad)
		require.ErrorIs(t, err, ErrQuestion, "%v", bad)
	}
	require.Equal(t, "NXDOMAIN", RCodeName(3))
	require.Equal(t, "RCODE15", RCodeName(15))
	require.Equal(t, "TYPE999", QTypeName(999))
	// The opcode from a response's flags (RFC 1035 4.1.1: bits 11-14).
	notify := DNSLookup{Flags: 0x8000 | 4<<11 | 0x0400}
	require.Equal(t, "NOTIFY", OpcodeName(notify.Opcode()))
	require.Equal(t, "QUERY", OpcodeName((&DNSLookup{Flags: 0x8180}).Opcode()))
	require.Equal(t, "OPCODE9", OpcodeName(9))
}

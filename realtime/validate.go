package realtime

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// Event data is checked here, before a publish joins a batch (batch.go), for
// everything PostgreSQL's jsonb would refuse or the node could not deliver:
// a refusal from the database would fail the whole batch's statement and
// send every publish in it down the slower one-by-one path, so one bad
// publisher would slow every good one.

// maxNumberExponent bounds the exponent of a number in event data (with its
// digits). jsonb stores numbers as numeric, which prints without an
// exponent: 1e100000 is 100,001 digits on the way out, and PostgreSQL
// refuses exponents past its numeric range. No JSON data a page means to
// send comes near this.
const maxNumberExponent = 16000

// checkEventData reports why data (valid JSON already) cannot be an event's
// data, or nil: invalid UTF-8, a \u0000 escape (jsonb refuses it), or a
// number whose exponent is beyond maxNumberExponent.
func checkEventData(data []byte) error {
	if !utf8.Valid(data) {
		return errors.New("invalid data: not valid UTF-8")
	}
	inString := false
	for i := 0; i < len(data); i++ {
		c := data[i]
		switch {
		case inString && c == '\\':
			if i+5 < len(data) && data[i+1] == 'u' && string(data[i+2:i+6]) == "0000" {
				return errors.New(`invalid data: a string holds \u0000, which PostgreSQL's jsonb cannot store`)
			}
			i++ // the escaped character, whatever it is
		case c == '"':
			inString = !inString
		case !inString && (c == 'e' || c == 'E') && i+1 < len(data) && (data[i+1] == '+' || data[i+1] == '-' || isDigit(data[i+1])):
			// An exponent (the e of true and false is followed by neither).
			j := i + 1
			if data[j] == '+' || data[j] == '-' {
				j++
			}
			exp := 0
			for ; j < len(data) && isDigit(data[j]); j++ {
				if exp <= maxNumberExponent {
					exp = exp*10 + int(data[j]-'0')
				}
			}
			// The mantissa's digits count too: 1234e15999 has 16003.
			digits := 0
			for k := i - 1; k >= 0 && (isDigit(data[k]) || data[k] == '.'); k-- {
				digits++
			}
			if exp+digits > maxNumberExponent {
				return fmt.Errorf("invalid data: a number's exponent is beyond %d (PostgreSQL stores numbers in full: it would be that many digits)", maxNumberExponent)
			}
			i = j - 1
		}
	}
	return nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

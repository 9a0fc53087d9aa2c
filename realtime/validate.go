package realtime

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// Event data is checked here, before a publish joins a batch (batch.go), for
// everything PostgreSQL's jsonb would refuse and for its size as the log
// measures it: a refusal from the database would fail the whole batch's
// statement and send every publish in it down the slower one-by-one path,
// so one bad publisher would slow every good one.

// PostgreSQL's numeric range, in which jsonb keeps every number: at most
// 131,072 digits before the decimal point and 16,383 after it.
const (
	maxNumericIntDigits  = 131072
	maxNumericFracDigits = 16383
)

// checkEventData reports why data (valid JSON already) cannot be an event's
// data, or nil: invalid UTF-8, a \u0000 escape (jsonb refuses it), a number
// outside numeric's range, or a printed size over maxSize (errEventTooLarge).
//
// The printed size is what the log measures (octet_length(data::text), see
// migrations/00007_bounds.sql) and what a stream delivers: jsonb prints a
// number in full, without an exponent (1e131071 is 131,072 digits), and puts
// a space after every comma and colon. Computed here from the text as an
// upper bound, without building the value: strings never print longer than
// they were sent (escapes print as short or shorter), numbers are counted as
// numeric_out writes them, separators as jsonb spaces them.
func checkEventData(data []byte, maxSize int) error {
	if !utf8.Valid(data) {
		return errors.New("invalid data: not valid UTF-8")
	}
	size := 0
	for i := 0; i < len(data); i++ {
		c := data[i]
		switch {
		case c == '"':
			// A string, to its closing quote.
			j := i + 1
			for ; j < len(data) && data[j] != '"'; j++ {
				if data[j] == '\\' {
					if j+5 < len(data) && data[j+1] == 'u' && string(data[j+2:j+6]) == "0000" {
						return errors.New(`invalid data: a string holds \u0000, which PostgreSQL's jsonb cannot store`)
					}
					j++ // the escaped character, whatever it is
				}
			}
			size += j - i + 1
			i = j
		case c == ',' || c == ':':
			size += 2
		case c == '-' || isDigit(c):
			j, printed, err := numberSize(data, i)
			if err != nil {
				return err
			}
			size += printed
			i = j - 1
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
		default: // brackets, braces, true, false, null
			size++
		}
		if size > maxSize {
			return fmt.Errorf("%w: more than %d bytes as the log stores it (numbers are stored in full, without exponents) (LIVEPG_MAX_EVENT_SIZE)", errEventTooLarge, maxSize)
		}
	}
	return nil
}

// numberSize reads the JSON number at data[i:] and returns where it ends and
// how many bytes numeric_out prints for it, at most: its sign, its integer
// digits (the exponent moves digits across the point), a point and its
// fraction digits (the scale: fraction digits sent, less the exponent).
func numberSize(data []byte, i int) (end, printed int, err error) {
	sign := 0
	if data[i] == '-' {
		sign, i = 1, i+1
	}
	intDigits, fracDigits := 0, 0
	for ; i < len(data) && isDigit(data[i]); i++ {
		intDigits++
	}
	if i < len(data) && data[i] == '.' {
		for i++; i < len(data) && isDigit(data[i]); i++ {
			fracDigits++
		}
	}
	exp := 0
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		negative := false
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			negative, i = data[i] == '-', i+1
		}
		for ; i < len(data) && isDigit(data[i]); i++ {
			if exp <= 2*maxNumericIntDigits {
				exp = exp*10 + int(data[i]-'0')
			}
		}
		if negative {
			exp = -exp
		}
	}
	whole := max(intDigits+exp, 1)
	scale := max(fracDigits-exp, 0)
	if whole > maxNumericIntDigits || scale > maxNumericFracDigits {
		return 0, 0, fmt.Errorf("invalid data: a number's exponent puts it outside PostgreSQL's numeric range (at most %d digits before the point and %d after)", maxNumericIntDigits, maxNumericFracDigits)
	}
	printed = sign + whole
	if scale > 0 {
		printed += 1 + scale
	}
	return i, printed, nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

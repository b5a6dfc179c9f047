package sshexec

import "strings"

// Quote returns s quoted for a POSIX shell: unchanged when it holds only characters that
// no shell treats specially, else inside single quotes, each ' written as '\''.
// The empty string becomes ''.
func Quote(s string) string {
	if s != "" && strings.IndexFunc(s, unsafeRune) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// QuoteCommand quotes each word of argv with Quote and joins them with spaces, giving one
// command line that a POSIX shell splits back into exactly argv.
func QuoteCommand(argv []string) string {
	var b strings.Builder
	for i, a := range argv {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(Quote(a))
	}
	return b.String()
}

// unsafeRune reports whether r needs quoting. The safe set is deliberately small: letters,
// digits and punctuation that is never special to sh, wherever it appears in a word ("="
// is not in it: an unquoted first word A=B would be an assignment, not a command).
func unsafeRune(r rune) bool {
	switch {
	case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
		return false
	}
	return !strings.ContainsRune("_-./,:+@%", r)
}

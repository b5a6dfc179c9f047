package sshexec

import "strings"

// Quote returns s quoted for a POSIX shell: unchanged when it holds only characters that
// no shell treats specially, else inside single quotes, with each single quote in s
// written as quote, backslash, quote, quote. The empty string becomes two single quotes.
func Quote(s string) string {
	if s != "" && strings.IndexFunc(s, unsafeRune) < 0 && !looksLikeAssignment(s) {
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
			// Only a first word can be taken for an assignment: keep -o Name=value
			// readable in traces.
			if a != "" && strings.IndexFunc(a, unsafeRune) < 0 {
				b.WriteString(a)
				continue
			}
		}
		b.WriteString(Quote(a))
	}
	return b.String()
}

// unsafeRune reports whether r needs quoting. The safe set is deliberately small: letters,
// digits and punctuation that is never special to sh, wherever it appears in a word.
func unsafeRune(r rune) bool {
	switch {
	case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
		return false
	}
	return !strings.ContainsRune("_-./,:+@%=", r)
}

// looksLikeAssignment reports whether s, unquoted as the first word of a command, would
// be a variable assignment (NAME=...) rather than the command's name.
func looksLikeAssignment(s string) bool {
	name, _, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return false
	}
	for i, r := range name {
		if r != '_' && !('a' <= r && r <= 'z') && !('A' <= r && r <= 'Z') && (i == 0 || !('0' <= r && r <= '9')) {
			return false
		}
	}
	return true
}

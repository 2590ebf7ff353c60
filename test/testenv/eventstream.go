package testenv

import (
	"bufio"
	"io"
	"strings"
)

// StreamData returns the data of each `data:` line of a server-sent event
// stream (the receiver's status stream), in order; the channel is closed
// when the stream ends. Specs that read a stream's events (not its `event:`
// names) share it.
func StreamData(body io.Reader) <-chan string {
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(body)
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				lines <- line
			}
		}
	}()
	return lines
}

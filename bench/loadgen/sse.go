package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// sseReader reads the events of a text/event-stream body, as the HTML standard's
// event-stream interpretation does for the one field an OpenAI stream uses: data lines are
// joined with "\n" and dispatched at a blank line; comments (":") and the event, id and
// retry fields are skipped; an event the stream cuts off before its blank line is dropped.
// Lines end in "\n" or "\r\n" (a lone "\r" ending is not recognised: no OpenAI-compatible
// server sends one).
type sseReader struct {
	r    *bufio.Reader
	line []byte // a line longer than the reader's buffer, assembled
	data []byte // the current event's data
	seen bool   // the current event has a data field (possibly empty)
}

func newSSEReader(r io.Reader) *sseReader {
	return &sseReader{r: bufio.NewReaderSize(r, 16*1024)}
}

// readLine returns the next line without its ending; the slice is valid until the next
// call. io.EOF once the body ends (a last line without an ending is returned first).
func (s *sseReader) readLine() ([]byte, error) {
	s.line = s.line[:0]
	for {
		part, err := s.r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			s.line = append(s.line, part...)
			continue
		}
		if len(s.line) > 0 {
			s.line = append(s.line, part...)
			part = s.line
		}
		if err != nil {
			if len(part) > 0 && errors.Is(err, io.EOF) {
				return part, nil
			}
			return nil, err
		}
		part = part[:len(part)-1]
		if n := len(part); n > 0 && part[n-1] == '\r' {
			part = part[:n-1]
		}
		return part, nil
	}
}

// Next returns the data of the next event; the slice is valid until the next call. It
// returns io.EOF when the body ends, or the read error that ended it.
func (s *sseReader) Next() ([]byte, error) {
	s.data = s.data[:0]
	s.seen = false
	for {
		line, err := s.readLine()
		if err != nil {
			return nil, err
		}
		if len(line) == 0 {
			if !s.seen {
				continue
			}
			return bytes.TrimSuffix(s.data, []byte{'\n'}), nil
		}
		if line[0] == ':' {
			continue // a comment
		}
		field, value, found := bytes.Cut(line, []byte{':'})
		if found && len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
		if string(field) == "data" {
			s.data = append(s.data, value...)
			s.data = append(s.data, '\n')
			s.seen = true
		}
	}
}

package cachemem

// A User packs its own strings in one string: each as its length (a
// uvarint) and its bytes, numbers as uvarints, a list as its length and its
// items. One allocation holds them all, with no 16-byte header per string
// and no rounding up of each to an allocation size.

// packer appends to a packed string.
type packer []byte

func (p *packer) num(n uint64) {
	for n >= 0x80 {
		*p = append(*p, byte(n)|0x80)
		n >>= 7
	}
	*p = append(*p, byte(n))
}

// length packs a length or count.
func (p *packer) length(n int) { p.num(uint64(n)) } //nolint:gosec // G115: a length is never negative

// time packs a User's time (nanos), bit for bit.
func (p *packer) time(n int64) { p.num(uint64(n)) } //nolint:gosec // G115: read back bit for bit by unpacker.time

func (p *packer) str(s string) {
	p.length(len(s))
	*p = append(*p, s...)
}

func (p *packer) strs(l []string) {
	p.length(len(l))
	for _, s := range l {
		p.str(s)
	}
}

// same packs s, which is often equal to like (packed elsewhere): as the
// one byte 0 when it is, else as 1 and s.
func (p *packer) same(s, like string) {
	if s == like {
		*p = append(*p, 0)
		return
	}
	*p = append(*p, 1)
	p.str(s)
}

// unpacker reads a packed string, in the order it was packed. The strings
// it returns are substrings of it: no copies.
type unpacker struct {
	s string
	i int
}

func (u *unpacker) num() uint64 {
	var n uint64
	for shift := 0; ; shift += 7 {
		b := u.s[u.i]
		u.i++
		n |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return n
		}
	}
}

// length reads what packer.length packed.
func (u *unpacker) length() int { return int(u.num()) } //nolint:gosec // G115: packed from an int by packer.length

// time reads what packer.time packed.
func (u *unpacker) time() int64 { return int64(u.num()) } //nolint:gosec // G115: packed from an int64 by packer.time

func (u *unpacker) str() string {
	n := u.length()
	s := u.s[u.i : u.i+n]
	u.i += n
	return s
}

// strs reads a list into buf (reused), or nil when the list is empty.
func (u *unpacker) strs(buf []string) []string {
	n := u.length()
	if n == 0 {
		return nil
	}
	for range n {
		buf = append(buf, u.str())
	}
	return buf
}

// same reads what packer.same packed: the string packed, or ok when it
// was equal to the one it was compared with.
func (u *unpacker) same() (s string, ok bool) {
	b := u.s[u.i]
	u.i++
	if b == 0 {
		return "", true
	}
	return u.str(), false
}

// or is s, or like when same.
func or(s string, same bool, like string) string {
	if same {
		return like
	}
	return s
}

// Package crypt makes password hashes in the SHA-512 form of crypt(3)
// ("$6$SALT$HASH", Ulrich Drepper's "Unix crypt using SHA-256 and
// SHA-512"), which glibc's crypt and so Debian's pam_unix check. It only
// makes hashes, for the etc/shadow of a root: checking them is pam_unix's
// job, inside the root.
package crypt

import (
	"crypto/rand"
	"crypto/sha512"
	"errors"
	"strings"
)

// The alphabet of crypt's base 64 (not RFC 4648's).
const alphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

const (
	rounds  = 5000 // the default: no "rounds=" in the hash
	saltLen = 16   // the most SHA-512 crypt uses
)

// SHA512 hashes password with a random salt.
func SHA512(password []byte) (string, error) {
	b := make([]byte, saltLen)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return SHA512Salt(password, string(b))
}

// SHA512Salt hashes password with salt (at most 16 characters of the
// crypt alphabet are used, as crypt does).
func SHA512Salt(password []byte, salt string) (string, error) {
	if len(salt) > saltLen {
		salt = salt[:saltLen]
	}
	for i := 0; i < len(salt); i++ {
		if !strings.ContainsRune(alphabet, rune(salt[i])) {
			return "", errors.New("a salt has characters of ./0-9A-Za-z only")
		}
	}
	s := []byte(salt)

	// Digest B: password, salt, password.
	b := sha512.New()
	b.Write(password)
	b.Write(s)
	b.Write(password)
	sumB := b.Sum(nil)

	// Digest A: password, salt, then B once per 64 bytes of password
	// and the rest, then for each bit of the password's length B or the
	// password.
	a := sha512.New()
	a.Write(password)
	a.Write(s)
	n := len(password)
	for ; n > 64; n -= 64 {
		a.Write(sumB)
	}
	a.Write(sumB[:n])
	for n = len(password); n > 0; n >>= 1 {
		if n&1 != 0 {
			a.Write(sumB)
		} else {
			a.Write(password)
		}
	}
	sumA := a.Sum(nil)

	// P: the password len(password) times; S: the salt 16+A[0] times.
	dp := sha512.New()
	for range len(password) {
		dp.Write(password)
	}
	p := repeat(dp.Sum(nil), len(password))
	ds := sha512.New()
	for range 16 + int(sumA[0]) {
		ds.Write(s)
	}
	sp := repeat(ds.Sum(nil), len(s))

	c := sumA
	for i := range rounds {
		h := sha512.New()
		if i&1 != 0 {
			h.Write(p)
		} else {
			h.Write(c)
		}
		if i%3 != 0 {
			h.Write(sp)
		}
		if i%7 != 0 {
			h.Write(p)
		}
		if i&1 != 0 {
			h.Write(c)
		} else {
			h.Write(p)
		}
		c = h.Sum(nil)
	}

	out := []byte("$6$" + salt + "$")
	for _, t := range [][3]int{
		{0, 21, 42}, {22, 43, 1}, {44, 2, 23}, {3, 24, 45}, {25, 46, 4}, {47, 5, 26}, {6, 27, 48},
		{28, 49, 7}, {50, 8, 29}, {9, 30, 51}, {31, 52, 10}, {53, 11, 32}, {12, 33, 54}, {34, 55, 13},
		{56, 14, 35}, {15, 36, 57}, {37, 58, 16}, {59, 17, 38}, {18, 39, 60}, {40, 61, 19}, {62, 20, 41},
	} {
		out = b64(out, uint(c[t[0]])<<16|uint(c[t[1]])<<8|uint(c[t[2]]), 4)
	}
	out = b64(out, uint(c[63]), 2)
	return string(out), nil
}

// repeat is the first n bytes of sum repeated.
func repeat(sum []byte, n int) []byte {
	out := make([]byte, 0, n)
	for len(out) < n {
		out = append(out, sum[:min(len(sum), n-len(out))]...)
	}
	return out
}

// b64 appends the n low 6-bit groups of v, lowest first.
func b64(out []byte, v uint, n int) []byte {
	for range n {
		out = append(out, alphabet[v&0x3f])
		v >>= 6
	}
	return out
}

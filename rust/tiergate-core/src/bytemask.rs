//! Bitmasks of byte classes over sixteen bytes at a time: bit `j` of the result is set
//! when byte `j` is in the class.
//!
//! On `x86_64` the masks are SSE2 compares and one `pmovmskb` (through `safe_arch`,
//! whose loads take `&[u8; 16]`, so the core stays free of `unsafe`): about a dozen
//! instructions per sixteen bytes. Elsewhere a portable loop computes the same bits.

/// Bit `j` set when `chunk[j]` is `"`, `\` or a control character (below 0x20): the
/// bytes a JSON string scan must stop at.
#[inline]
pub fn string_specials(chunk: &[u8; 16]) -> u32 {
    imp::string_specials(chunk)
}

/// Bits of the ASCII letters of `chunk`, and of those that are upper-case.
#[inline]
pub fn ascii_letters(chunk: &[u8; 16]) -> (u32, u32) {
    imp::ascii_letters(chunk)
}

/// The classes of 64 bytes the token walk's block path tells apart, bit `j` for byte `j`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenMasks {
    /// ASCII letters.
    pub letters: u64,
    /// Bytes whose bit 5 is clear: among letters, the upper-case ones.
    pub caps: u64,
    /// ASCII digits.
    pub digits: u64,
    /// Spaces (`b' '` only).
    pub spaces: u64,
    /// Bytes below 0x20 (newlines, tabs, other controls), from 0x80, and `'`: the
    /// bytes the caller looks at one by one.
    pub rare: u64,
}

/// [`TokenMasks`] of `block`: about fifteen SSE2 instructions per sixteen bytes.
#[inline]
pub fn token_masks(block: &[u8; 64]) -> TokenMasks {
    let mut m = TokenMasks {
        letters: 0,
        caps: 0,
        digits: 0,
        spaces: 0,
        rare: 0,
    };
    for k in 0..4 {
        let [letters, caps, digits, spaces, rare] = imp::token_classes(sub16(block, k));
        m.letters |= u64::from(letters) << (16 * k);
        m.caps |= u64::from(caps) << (16 * k);
        m.digits |= u64::from(digits) << (16 * k);
        m.spaces |= u64::from(spaces) << (16 * k);
        m.rare |= u64::from(rare) << (16 * k);
    }
    m
}

/// The `k`-th sixteen bytes of `block` (`k` < 4).
#[inline]
fn sub16(block: &[u8; 64], k: usize) -> &[u8; 16] {
    block[16 * k..16 * k + 16].try_into().unwrap_or(&[0; 16])
}

/// The safety scan's classes of the sixteen positions starting at `w[0]` (`w` holds three
/// bytes more, the needle bytes after a position): the key characters `[A-Za-z0-9_-]`
/// (bits 0 to 15) and the digits (bits 16 to 31); and where another anchor may start:
/// `@`, `<`, `-`, and, case-folded, `e` `a` `r` (`earer`), · `n` `s` (`inst`),
/// `p` · · `m` (`prompt`), `r` `u` (`rules`), `m` · · `s` (`message`), space · · `w`
/// (` now`). The anchors are a superset the caller confirms; two or three bytes each
/// keep prose's false starts rare.
///
/// Two chunks at a time (`w`: 32 bytes and three more), one `(classes, anchors)` pair
/// each, as `classes | anchors << 32`.
#[inline]
pub fn safety_classes(w: &[u8; 35]) -> (u64, u64) {
    imp::safety_classes(w)
}

/// `w[K..K + N]` (always in bounds: the zeros are never used).
#[allow(clippy::inline_always)]
#[inline(always)]
fn sub<const K: usize, const N: usize, const M: usize>(w: &[u8; M]) -> &[u8; N] {
    w[K..K + N].try_into().unwrap_or(&[0; N])
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod imp {
    use safe_arch::{
        add_i8_m128i, cmp_eq_mask_i8_m128i, cmp_lt_mask_i8_m128i, load_unaligned_m128i,
        min_u8_m128i, move_mask_i8_m128i, set_splat_i8_m128i, shl_imm_u16_m128i, sub_i8_m128i,
    };

    #[allow(clippy::inline_always)] // a dozen instructions in every scan loop
    #[inline(always)]
    pub fn string_specials(chunk: &[u8; 16]) -> u32 {
        let v = load_unaligned_m128i(chunk);
        let quote = cmp_eq_mask_i8_m128i(v, set_splat_i8_m128i(b'"' as i8));
        let backslash = cmp_eq_mask_i8_m128i(v, set_splat_i8_m128i(b'\\' as i8));
        // min(v, 0x1F) == v exactly when v <= 0x1F (unsigned).
        let control = cmp_eq_mask_i8_m128i(min_u8_m128i(v, set_splat_i8_m128i(0x1F)), v);
        move_mask_i8_m128i(quote | backslash | control) as u32
    }

    #[allow(clippy::inline_always)] // per word of prose in the token walk
    #[inline(always)]
    pub fn ascii_letters(chunk: &[u8; 16]) -> (u32, u32) {
        let v = load_unaligned_m128i(chunk);
        // Fold case (bit 5 set), shift 'a' to 0: a letter is then at most 25, unsigned.
        let x = sub_i8_m128i(v | set_splat_i8_m128i(0x20), set_splat_i8_m128i(b'a' as i8));
        let letter = cmp_eq_mask_i8_m128i(min_u8_m128i(x, set_splat_i8_m128i(25)), x);
        let lower = cmp_eq_mask_i8_m128i(v & set_splat_i8_m128i(0x20), set_splat_i8_m128i(0x20));
        let letters = move_mask_i8_m128i(letter) as u32;
        (letters, letters & !(move_mask_i8_m128i(lower) as u32))
    }

    #[allow(clippy::inline_always)] // four per 64 bytes of text in the token walk
    #[inline(always)]
    pub fn token_classes(chunk: &[u8; 16]) -> [u32; 5] {
        let v = load_unaligned_m128i(chunk);
        let mask = |m| move_mask_i8_m128i(m) as u32;
        // Signed compares after a shift of the range's start to -128: one compare each.
        let range = |x, lo: u8, n: u8| {
            let shifted = add_i8_m128i(x, set_splat_i8_m128i(0x80u8.wrapping_sub(lo) as i8));
            cmp_lt_mask_i8_m128i(shifted, set_splat_i8_m128i((0x80u8 + n) as i8))
        };
        let letters = mask(range(v | set_splat_i8_m128i(0x20), b'a', 26));
        // Bit 5 of each byte moved to bit 7 (the 16-bit shift moves no other bit there).
        let caps = !mask(shl_imm_u16_m128i::<2>(v)) & 0xFFFF;
        let digits = mask(range(v, b'0', 10));
        let spaces = mask(cmp_eq_mask_i8_m128i(v, set_splat_i8_m128i(b' ' as i8)));
        // Below 0x20 as a signed byte: the controls and every byte from 0x80.
        let rare = cmp_lt_mask_i8_m128i(v, set_splat_i8_m128i(0x20))
            | cmp_eq_mask_i8_m128i(v, set_splat_i8_m128i(b'\'' as i8));
        [letters, caps, digits, spaces, mask(rare)]
    }

    use super::sub;

    // Not inlined: the caller's pushes may call the allocator, and every SSE register
    // live across that call would be spilled; a call here costs less.
    #[inline(never)]
    pub fn safety_classes(w: &[u8; 35]) -> (u64, u64) {
        let pack = |(classes, anchors): (u32, u32)| u64::from(classes) | u64::from(anchors) << 32;
        (
            pack(chunk(sub::<0, 19, 35>(w))),
            pack(chunk(sub::<16, 19, 35>(w))),
        )
    }

    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn chunk(w: &[u8; 19]) -> (u32, u32) {
        let eq = |v, c: u8| cmp_eq_mask_i8_m128i(v, set_splat_i8_m128i(c as i8));
        let fold = set_splat_i8_m128i(0x20);
        let l0 = load_unaligned_m128i(sub::<0, 16, 19>(w));
        // Case-folded (the letters' bit 5 set): the needles' other bytes are letters.
        let f0 = l0 | fold;
        let f1 = load_unaligned_m128i(sub::<1, 16, 19>(w)) | fold;
        let f2 = load_unaligned_m128i(sub::<2, 16, 19>(w)) | fold;
        let f3 = load_unaligned_m128i(sub::<3, 16, 19>(w)) | fold;
        // Unsigned ranges: x - lo <= span exactly when min(x - lo, span) == x - lo.
        let x = sub_i8_m128i(f0, set_splat_i8_m128i(b'a' as i8));
        let letter = cmp_eq_mask_i8_m128i(min_u8_m128i(x, set_splat_i8_m128i(25)), x);
        let d = sub_i8_m128i(l0, set_splat_i8_m128i(b'0' as i8));
        let digit = cmp_eq_mask_i8_m128i(min_u8_m128i(d, set_splat_i8_m128i(9)), d);
        let dash = eq(l0, b'-');
        let token = letter | digit | dash | eq(l0, b'_');
        let rare = dash | eq(l0, b'@') | eq(l0, b'<');
        let words = (eq(f1, b'n') & eq(f2, b's'))
            | (eq(f0, b'p') & eq(f3, b'm'))
            | (eq(f0, b'r') & eq(f1, b'u'))
            | (eq(f0, b'm') & eq(f3, b's'))
            | (eq(l0, b' ') & eq(f3, b'w'))
            | (eq(f0, b'e') & eq(f1, b'a') & eq(f2, b'r'));
        (
            move_mask_i8_m128i(token) as u32 | (move_mask_i8_m128i(digit) as u32) << 16,
            move_mask_i8_m128i(rare | words) as u32,
        )
    }
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
mod imp {
    pub fn string_specials(chunk: &[u8; 16]) -> u32 {
        super::string_specials_portable(chunk)
    }

    pub fn ascii_letters(chunk: &[u8; 16]) -> (u32, u32) {
        super::ascii_letters_portable(chunk)
    }

    pub fn safety_classes(w: &[u8; 35]) -> (u64, u64) {
        super::safety_classes_portable(w)
    }

    pub fn token_classes(chunk: &[u8; 16]) -> [u32; 5] {
        super::token_classes_portable(chunk)
    }
}

/// The portable definition, also the reference the tests compare the SIMD path with.
#[allow(dead_code)] // used on targets without SSE2, and by the tests
fn string_specials_portable(chunk: &[u8; 16]) -> u32 {
    let mut m = 0u32;
    for (j, &c) in chunk.iter().enumerate() {
        m |= u32::from(c == b'"' || c == b'\\' || c < 0x20) << j;
    }
    m
}

#[allow(dead_code)] // used on targets without SSE2, and by the tests
fn ascii_letters_portable(chunk: &[u8; 16]) -> (u32, u32) {
    let (mut letters, mut upper) = (0u32, 0u32);
    for (j, &c) in chunk.iter().enumerate() {
        letters |= u32::from(c.is_ascii_alphabetic()) << j;
        upper |= u32::from(c.is_ascii_uppercase()) << j;
    }
    (letters, upper)
}

#[allow(dead_code)] // used on targets without SSE2, and by the tests
fn token_classes_portable(chunk: &[u8; 16]) -> [u32; 5] {
    let mut m = [0u32; 5];
    for (j, &c) in chunk.iter().enumerate() {
        let bits = [
            c.is_ascii_alphabetic(),
            c & 0x20 == 0,
            c.is_ascii_digit(),
            c == b' ',
            !(0x20..0x80).contains(&c) || c == b'\'',
        ];
        for (m, bit) in m.iter_mut().zip(bits) {
            *m |= u32::from(bit) << j;
        }
    }
    m
}

#[allow(dead_code)] // used on targets without SSE2, and by the tests
fn safety_classes_portable(w: &[u8; 35]) -> (u64, u64) {
    let half = |at: usize| {
        let (classes, anchors) = safety_classes_portable_16(&w[at..at + 19]);
        u64::from(classes) | u64::from(anchors) << 32
    };
    (half(0), half(16))
}

#[allow(dead_code)] // used on targets without SSE2, and by the tests
fn safety_classes_portable_16(w: &[u8]) -> (u32, u32) {
    let (mut token, mut digits, mut anchors) = (0u32, 0u32, 0u32);
    for j in 0..16 {
        let l = |k: usize| w[j + k];
        let f = |k: usize| w[j + k] | 0x20;
        let c = l(0);
        token |= u32::from(c.is_ascii_alphanumeric() || c == b'_' || c == b'-') << j;
        digits |= u32::from(c.is_ascii_digit()) << j;
        let any = c == b'@'
            || c == b'<'
            || c == b'-'
            || (f(0) == b'e' && f(1) == b'a' && f(2) == b'r')
            || (f(1) == b'n' && f(2) == b's')
            || (f(0) == b'p' && f(3) == b'm')
            || (f(0) == b'r' && f(1) == b'u')
            || (f(0) == b'm' && f(3) == b's')
            || (c == b' ' && f(3) == b'w');
        anchors |= u32::from(any) << j;
    }
    (token | digits << 16, anchors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_value_in_every_lane() {
        for lane in 0..16 {
            for c in 0..=255u8 {
                let mut chunk = [b'a'; 16];
                chunk[lane] = c;
                let want = if c == b'"' || c == b'\\' || c < 0x20 {
                    1 << lane
                } else {
                    0
                };
                assert_eq!(
                    string_specials(&chunk),
                    want,
                    "byte {c:#04x} in lane {lane}"
                );
                assert_eq!(string_specials_portable(&chunk), want);
                let letter = u32::from(c.is_ascii_alphabetic()) << lane;
                let upper = u32::from(c.is_ascii_uppercase()) << lane;
                let others = 0xFFFF & !(1 << lane); // the 'a' around it
                assert_eq!(ascii_letters(&chunk), (letter | others, upper), "{c:#04x}");
                assert_eq!(ascii_letters_portable(&chunk), (letter | others, upper));
                assert_eq!(
                    imp::token_classes(&chunk),
                    token_classes_portable(&chunk),
                    "{c:#04x}"
                );
            }
        }
    }

    #[test]
    fn mixed_chunks_match_the_portable_definition() {
        // A fixed pseudo-random walk over chunks dense in specials and high bytes.
        let mut rng = crate::mutate::XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let mut chunk = [0u8; 16];
            for c in &mut chunk {
                *c = [
                    b'"', b'\\', 0x1F, 0x20, 0x00, 0x7F, 0x80, 0xFF, b'a', b'Z', b'@', b'[', b'`',
                    b'{', b'0', b'9', b'/', b':', b'\t', b'\r', b'\n', 0x0b, 0x0c, 0x0e, 0x08,
                ][rng.below(25)];
            }
            assert_eq!(string_specials(&chunk), string_specials_portable(&chunk));
            assert_eq!(ascii_letters(&chunk), ascii_letters_portable(&chunk));
            assert_eq!(imp::token_classes(&chunk), token_classes_portable(&chunk));
        }
    }

    #[test]
    fn token_masks_are_the_bytes_classes() {
        let mut rng = crate::mutate::XorShift(0x2545_F491_4F6C_DD1D);
        for _ in 0..5_000 {
            let mut block = [0u8; 64];
            for c in &mut block {
                *c = [
                    b' ', b'a', b'z', b'A', b'Z', b'@', b'[', b'`', b'{', b'\t', 0x80, 0xE9, b'0',
                    b'9', b'/', b':', b'\'', b'\n', 0x1F, 0x7F, 0xFF, 0x00,
                ][rng.below(22)];
            }
            let m = token_masks(&block);
            for (j, &c) in block.iter().enumerate() {
                assert_eq!(m.letters >> j & 1 == 1, c.is_ascii_alphabetic());
                assert_eq!(m.caps >> j & 1 == 1, c & 0x20 == 0);
                assert_eq!(m.digits >> j & 1 == 1, c.is_ascii_digit());
                assert_eq!(m.spaces >> j & 1 == 1, c == b' ');
                assert_eq!(
                    m.rare >> j & 1 == 1,
                    !(0x20..0x80).contains(&c) || c == b'\''
                );
            }
        }
    }

    /// Every byte value at every offset of the window, on a background of each letter
    /// the anchors test and their upper case, then windows dense in those letters.
    #[test]
    fn safety_classes_match_the_portable_definition() {
        for bg in b"aenspmruwEANSPMRUW -@<0_".iter().copied() {
            for lane in 0..35 {
                for c in 0..=255u8 {
                    let mut w = [bg; 35];
                    w[lane] = c;
                    assert_eq!(
                        safety_classes(&w),
                        safety_classes_portable(&w),
                        "{c:#04x} at {lane} on {bg:#04x}"
                    );
                }
            }
        }
        let mut rng = crate::mutate::XorShift(0x2545_F491_4F6C_DD1D);
        let alphabet = b"earEARnNsSpPmMuUwW -_@<09aZ\x00\x7f\x80\xff\x40\x60";
        for _ in 0..50_000 {
            let mut w = [0u8; 35];
            for c in &mut w {
                *c = alphabet[rng.below(alphabet.len())];
            }
            assert_eq!(safety_classes(&w), safety_classes_portable(&w), "{w:?}");
        }
    }
}

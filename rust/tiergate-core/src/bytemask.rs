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

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod imp {
    use safe_arch::{
        cmp_eq_mask_i8_m128i, load_unaligned_m128i, min_u8_m128i, move_mask_i8_m128i,
        set_splat_i8_m128i, sub_i8_m128i,
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
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
mod imp {
    pub fn string_specials(chunk: &[u8; 16]) -> u32 {
        super::string_specials_portable(chunk)
    }

    pub fn ascii_letters(chunk: &[u8; 16]) -> (u32, u32) {
        super::ascii_letters_portable(chunk)
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
            }
        }
    }

    #[test]
    fn mixed_chunks_match_the_portable_definition() {
        // A fixed pseudo-random walk over chunks dense in specials and high bytes.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20_000 {
            let mut chunk = [0u8; 16];
            for c in &mut chunk {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *c = [
                    b'"', b'\\', 0x1F, 0x20, 0x00, 0x7F, 0x80, 0xFF, b'a', b'Z', b'@', b'[', b'`',
                    b'{', b'0', b'9', b'/', b':', b'\t', b'\r', b'\n', 0x0b, 0x0c, 0x0e, 0x08,
                ][(x % 25) as usize];
            }
            assert_eq!(string_specials(&chunk), string_specials_portable(&chunk));
            assert_eq!(ascii_letters(&chunk), ascii_letters_portable(&chunk));
        }
    }
}

//! 16-byte secrets and ids as 32 lowercase hexadecimal digits: the session
//! cookie's key and the Redis store's secret in configuration files, the
//! console's session ids and MACs in its cookie.

/// `bytes` as 32 lowercase hexadecimal digits.
pub(crate) fn encode(bytes: &[u8; 16]) -> String {
    format!("{:032x}", u128::from_be_bytes(*bytes))
}

/// The 16 bytes 32 hexadecimal digits stand for; `None` for anything
/// else (a sign, another length, another character).
pub(crate) fn decode(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(text, 16).ok().map(u128::to_be_bytes)
}

/// A configuration field's 16-byte key, or an error naming the field.
pub(crate) fn key_field(field: &str, text: &str) -> Result<[u8; 16], String> {
    decode(text).ok_or_else(|| {
        format!(
            "`{field}` must be 32 hexadecimal digits (16 bytes), got {} characters",
            text.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_back_and_bad_ones_say_what_is_wrong() {
        let key = *b"0123456789abcdef";
        assert_eq!(encode(&key), "30313233343536373839616263646566");
        assert_eq!(decode(&encode(&key)), Some(key));
        assert_eq!(decode(&encode(&[0; 16])), Some([0; 16]));
        assert!(
            key_field("key", "abc")
                .unwrap_err()
                .contains("got 3 characters")
        );
        assert_eq!(decode(&"zz".repeat(16)), None);
        assert_eq!(decode(&format!("+{}", "0".repeat(31))), None);
        assert_eq!(decode(&"é".repeat(16)), None);
    }
}

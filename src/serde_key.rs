//! A 16-byte secret in a configuration file: 32 hexadecimal digits (the
//! session cookie's key, the Redis store's secret).

/// The key as 32 lowercase hexadecimal digits.
pub(crate) fn to_hex(key: &[u8; 16]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// 16 bytes from 32 hexadecimal digits.
pub(crate) fn from_hex(field: &str, text: &str) -> Result<[u8; 16], String> {
    let bad = || {
        format!(
            "`{field}` must be 32 hexadecimal digits (16 bytes), got {} characters",
            text.len()
        )
    };
    if text.len() != 32 || !text.is_ascii() {
        return Err(bad());
    }
    let mut key = [0u8; 16];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_back_and_bad_ones_say_what_is_wrong() {
        let key = *b"0123456789abcdef";
        assert_eq!(from_hex("key", &to_hex(&key)), Ok(key));
        assert!(
            from_hex("key", "abc")
                .unwrap_err()
                .contains("got 3 characters")
        );
        assert!(from_hex("key", &"zz".repeat(16)).is_err());
        assert!(from_hex("key", &"é".repeat(16)).is_err());
    }
}

//! The codecs under test, each behind the two calls procpool makes:
//! `enc` appends one value to a frame buffer, `dec` decodes one value from a slice.

use serde::Serialize;
use serde::de::DeserializeOwned;

pub trait Codec {
    const NAME: &'static str;
    /// Appends `v`, encoded, to `buf` (the frame).
    fn enc<T: Serialize + ?Sized>(buf: &mut Vec<u8>, v: &T) -> Result<(), String>;
    /// Decodes one value from `b`, the whole slice (trailing bytes: whatever the codec does).
    fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T, String>;
}

/// bincode 1.3: `serialize_into(&mut Vec<u8>, v)` / `deserialize(&[u8])`, as procpool does.
pub struct Bincode1;
impl Codec for Bincode1 {
    const NAME: &'static str = "bincode1";
    #[inline]
    fn enc<T: Serialize + ?Sized>(buf: &mut Vec<u8>, v: &T) -> Result<(), String> {
        bincode1::serialize_into(buf, v).map_err(|e| e.to_string())
    }
    #[inline]
    fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
        bincode1::deserialize(b).map_err(|e| e.to_string())
    }
}

/// postcard 1: a custom `Flavor` that appends to the caller's `&mut Vec<u8>` (no copy),
/// `from_bytes` to decode.
pub struct Postcard;
pub struct Append<'a>(pub &'a mut Vec<u8>);
impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();
    #[inline(always)]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }
    #[inline(always)]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }
    #[inline(always)]
    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}
impl Codec for Postcard {
    const NAME: &'static str = "postcard";
    #[inline]
    fn enc<T: Serialize + ?Sized>(buf: &mut Vec<u8>, v: &T) -> Result<(), String> {
        postcard::serialize_with_flavor::<T, _, _>(v, Append(buf)).map_err(|e| e.to_string())
    }
    #[inline]
    fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
        postcard::from_bytes(b).map_err(|e| e.to_string())
    }
}

/// bitcode 0.6 (serde): `bitcode::serialize` only returns a fresh Vec, so appending costs
/// that Vec plus a copy into the frame; `bitcode::deserialize` to decode.
pub struct Bitcode;
impl Codec for Bitcode {
    const NAME: &'static str = "bitcode";
    #[inline]
    fn enc<T: Serialize + ?Sized>(buf: &mut Vec<u8>, v: &T) -> Result<(), String> {
        let bytes = bitcode::serialize(v).map_err(|e| e.to_string())?;
        buf.extend_from_slice(&bytes);
        Ok(())
    }
    #[inline]
    fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
        bitcode::deserialize(b).map_err(|e| e.to_string())
    }
}

/// wincode 0.6 through serde-wincode 0.1, with wincode's default configuration
/// (fixint, little endian, u64 lengths, u32 enum tags, preallocation limit 4 MiB).
/// Encodes with `serde_wincode::Serializer::new(&mut Vec<u8>)` (one pass, appends),
/// decodes with `serde_wincode::Deserializer::new(&[u8])`.
pub struct WincodeDefault;
impl Codec for WincodeDefault {
    const NAME: &'static str = "wincode(def)";
    #[inline]
    fn enc<T: Serialize + ?Sized>(buf: &mut Vec<u8>, v: &T) -> Result<(), String> {
        v.serialize(serde_wincode::Serializer::<_, wincode::config::Configuration>::new(buf))
            .map_err(|e| e.to_string())
    }
    #[inline]
    fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
        T::deserialize(serde_wincode::Deserializer::<_, wincode::config::Configuration>::new(b))
            .map_err(|e| e.to_string())
    }
}

/// The same with the preallocation limit raised to 1 GiB (procpool's MAX_FRAME).
pub type WinCfg1G = wincode::config::Configuration<true, { 1 << 30 }>;
pub struct Wincode1G;
impl Codec for Wincode1G {
    const NAME: &'static str = "wincode(1G)";
    #[inline]
    fn enc<T: Serialize + ?Sized>(buf: &mut Vec<u8>, v: &T) -> Result<(), String> {
        v.serialize(serde_wincode::Serializer::<_, WinCfg1G>::new(buf)).map_err(|e| e.to_string())
    }
    #[inline]
    fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
        T::deserialize(serde_wincode::Deserializer::<_, WinCfg1G>::new(b)).map_err(|e| e.to_string())
    }
}

/// bincode 2.0.1 serde feature, `config::legacy()` (bincode-1 format), reference only.
pub struct Bincode2;
impl Codec for Bincode2 {
    const NAME: &'static str = "bincode2(ref)";
    #[inline]
    fn enc<T: Serialize + ?Sized>(buf: &mut Vec<u8>, v: &T) -> Result<(), String> {
        bincode2::serde::encode_into_std_write(v, buf, bincode2::config::legacy())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    #[inline]
    fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
        bincode2::serde::decode_from_slice(b, bincode2::config::legacy())
            .map(|(v, _)| v)
            .map_err(|e| e.to_string())
    }
}

/// Runs `$body` once per codec with `$C` bound to its type.
#[macro_export]
macro_rules! for_each_codec {
    ($C:ident => $body:block) => {{
        { type $C = $crate::codecs::Bincode1; $body }
        { type $C = $crate::codecs::Postcard; $body }
        { type $C = $crate::codecs::Bitcode; $body }
        { type $C = $crate::codecs::WincodeDefault; $body }
        { type $C = $crate::codecs::Wincode1G; $body }
        { type $C = $crate::codecs::Bincode2; $body }
    }};
}

pub const NAMES: [&str; 6] =
    ["bincode1", "postcard", "bitcode", "wincode(def)", "wincode(1G)", "bincode2(ref)"];

//! Protobuf wire encoding by hand, including encodings the generated code never emits, and
//! unknown fields that smuggle a user id into a request.

use uuid::Uuid;

/// Builds protobuf bytes field by field, including encodings the generated code never emits.
#[derive(Debug, Default, Clone)]
pub struct Wire(Vec<u8>);

impl Wire {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn raw_varint(&mut self, mut v: u64) -> &mut Self {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
        self
    }

    fn key(&mut self, field: u32, wire_type: u8) -> &mut Self {
        self.raw_varint((u64::from(field) << 3) | u64::from(wire_type))
    }

    /// A varint field (int32, int64, bool, enum). Negative int32s are 10-byte varints.
    pub fn varint(&mut self, field: u32, v: u64) -> &mut Self {
        self.key(field, 0).raw_varint(v)
    }

    /// A length-delimited field with arbitrary bytes (not necessarily UTF-8).
    pub fn bytes(&mut self, field: u32, v: &[u8]) -> &mut Self {
        self.key(field, 2).raw_varint(v.len() as u64);
        self.0.extend_from_slice(v);
        self
    }

    pub fn string(&mut self, field: u32, v: &str) -> &mut Self {
        self.bytes(field, v.as_bytes())
    }

    pub fn fixed64(&mut self, field: u32, v: u64) -> &mut Self {
        self.key(field, 1);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn fixed32(&mut self, field: u32, v: u32) -> &mut Self {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends bytes as they are (a truncated field, garbage).
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

/// Unknown fields naming `victim` every way a careless server might read a user from: as a
/// string and as 16 raw bytes, on several unused field numbers, appended to a request.
pub fn smuggled_user_fields(victim: Uuid) -> Vec<u8> {
    let mut wire = Wire::new();
    wire.string(15, &victim.to_string())
        .bytes(16, victim.as_bytes())
        .string(99, &victim.to_string())
        .string(1000, &format!("user_id={victim}"))
        .string(536_870_911, &victim.to_string());
    wire.finish()
}

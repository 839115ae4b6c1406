//! Just enough of the BPF Type Format to find struct member offsets in the
//! running kernel (`/sys/kernel/btf/vmlinux`), for the exec gate's reads of
//! kernel memory. aya parses BTF too but keeps struct members private, and
//! the programs here are plain tracepoints without CO-RE relocations.
use std::collections::HashMap;

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_FUNC: u32 = 12;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading BTF: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("no struct {0} in BTF")]
    NoStruct(String),
    #[error("no function {0} in BTF")]
    NoFunction(String),
    #[error("no member {member} in struct {strukt}")]
    NoMember { strukt: String, member: String },
}

#[derive(Debug, Clone)]
struct Type {
    name_off: u32,
    kind: u32,
    /// For modifiers and typedefs: the type referred to.
    referred: u32,
    /// Members, enumerators or parameters.
    vlen: u32,
    members: Vec<Member>,
}

#[derive(Debug, Clone, Copy)]
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
}

pub struct Btf {
    /// Index = type id - 1.
    types: Vec<Type>,
    strings: Vec<u8>,
    structs: HashMap<String, u32>,
    functions: HashMap<String, u32>,
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::parse(&std::fs::read("/sys/kernel/btf/vmlinux")?)
    }

    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let u16_at = |at: usize| {
            data.get(at..at + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
        };
        let u32_at = |at: usize| {
            data.get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        if u16_at(0) != Some(MAGIC) {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let field = |at| {
            u32_at(at)
                .map(|v| v as usize)
                .ok_or(BtfError::Malformed("short header"))
        };
        let header_len = field(4)?;
        let (type_off, type_len, str_off, str_len) =
            (field(8)?, field(12)?, field(16)?, field(20)?);
        let types_start = header_len + type_off;
        let types_end = types_start + type_len;
        let strings = data
            .get(header_len + str_off..header_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of range"))?
            .to_vec();
        let mut types = Vec::new();
        let mut at = types_start;
        while at < types_end {
            let word = |i: usize| u32_at(at + 4 * i).ok_or(BtfError::Malformed("truncated type"));
            let (name_off, info, size_or_type) = (word(0)?, word(1)?, word(2)?);
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            at += 12;
            let mut members = Vec::new();
            let extra = match kind {
                1 | 14 | 17 => 4,     // int, var, decl_tag
                3 => 12,              // array
                6 => 8 * vlen,        // enum
                13 => 8 * vlen,       // func_proto
                15 | 19 => 12 * vlen, // datasec, enum64
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let base = at + 12 * i;
                        let m = |j: usize| {
                            u32_at(base + 4 * j).ok_or(BtfError::Malformed("truncated member"))
                        };
                        let offset = m(2)?;
                        members.push(Member {
                            name_off: m(0)?,
                            type_id: m(1)?,
                            bit_offset: if kind_flag {
                                offset & 0x00ff_ffff
                            } else {
                                offset
                            },
                        });
                    }
                    12 * vlen
                }
                2 | 7..=12 | 16 | 18 => 0,
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            at += extra;
            types.push(Type {
                name_off,
                kind,
                referred: size_or_type,
                vlen: vlen as u32,
                members,
            });
        }
        let mut btf = Self {
            types,
            strings,
            structs: HashMap::new(),
            functions: HashMap::new(),
        };
        for (index, ty) in btf.types.iter().enumerate() {
            let index = match ty.kind {
                KIND_STRUCT | KIND_FUNC if ty.name_off != 0 => index as u32 + 1,
                _ => continue,
            };
            let name = btf.string(ty.name_off).to_string();
            let names = if ty.kind == KIND_FUNC {
                &mut btf.functions
            } else {
                &mut btf.structs
            };
            names.entry(name).or_insert(index);
        }
        Ok(btf)
    }

    fn string(&self, offset: u32) -> &str {
        let rest = self.strings.get(offset as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn get(&self, id: u32) -> Option<&Type> {
        id.checked_sub(1).and_then(|i| self.types.get(i as usize))
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let ty = self.get(id)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.referred
                }
                _ => return Some(ty),
            }
        }
        None
    }

    /// Byte offset of `member` in `struct NAME`, looking inside anonymous
    /// structs and unions as C does.
    /// How many parameters a kernel function takes (LSM hooks gained some over time).
    pub fn function_params(&self, name: &str) -> Result<u32, BtfError> {
        let proto = self
            .functions
            .get(name)
            .and_then(|id| self.get(*id))
            .and_then(|func| self.get(func.referred))
            .ok_or_else(|| BtfError::NoFunction(name.to_string()))?;
        Ok(proto.vlen)
    }

    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let id = *self
            .structs
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.into()))?;
        let ty = self
            .get(id)
            .ok_or(BtfError::Malformed("dangling struct id"))?;
        self.find_member(ty, member, 0)
            .map(|bits| bits / 8)
            .ok_or_else(|| BtfError::NoMember {
                strukt: strukt.into(),
                member: member.into(),
            })
    }

    fn find_member(&self, ty: &Type, name: &str, depth: u32) -> Option<u32> {
        if depth > 8 {
            return None;
        }
        for member in &ty.members {
            if member.name_off != 0 && self.string(member.name_off) == name {
                return Some(member.bit_offset);
            }
        }
        ty.members
            .iter()
            .filter(|m| m.name_off == 0)
            .find_map(|member| {
                let inner = self.resolve(member.type_id)?;
                if inner.kind != KIND_STRUCT && inner.kind != KIND_UNION {
                    return None;
                }
                self.find_member(inner, name, depth + 1)
                    .map(|bits| member.bit_offset + bits)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built BTF blob: struct outer { int a; union { int b; int c; }; }.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0b\0c\0".to_vec();
        let (int, outer, a, b, c) = (1u32, 5u32, 11u32, 13u32, 15u32);
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            words
                .iter()
                .for_each(|w| types.extend_from_slice(&w.to_le_bytes()))
        };
        push(&[int, 1 << 24, 4, 32]); // [1] int, 4 bytes
        push(&[0, (KIND_UNION << 24) | 2, 4, b, 1, 0, c, 1, 0]); // [2] anonymous union
        push(&[outer, (KIND_STRUCT << 24) | 2, 8, a, 1, 0, 0, 2, 32]); // [3] struct outer
        let mut data = Vec::new();
        data.extend_from_slice(&(MAGIC as u32 | (1 << 16)).to_le_bytes());
        for v in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            data.extend_from_slice(&v.to_le_bytes());
        }
        data.extend_from_slice(&types);
        data.extend_from_slice(&strings);
        data
    }

    #[test]
    fn finds_members_also_inside_anonymous_unions() {
        let btf = Btf::parse(&blob()).unwrap();
        assert_eq!(btf.member_offset("outer", "a").unwrap(), 0);
        assert_eq!(btf.member_offset("outer", "c").unwrap(), 4);
        assert!(matches!(
            btf.member_offset("outer", "d"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.member_offset("inner", "a"),
            Err(BtfError::NoStruct(_))
        ));
        assert!(Btf::parse(b"nope").is_err());
    }

    #[test]
    fn reads_this_kernel() {
        let Ok(btf) = Btf::from_sys_fs() else {
            return; // a kernel without BTF: the gate falls back to comm only
        };
        let mm = btf.member_offset("task_struct", "mm").unwrap();
        assert!(mm > 0);
        btf.member_offset("mm_struct", "exe_file").unwrap();
        btf.member_offset("file", "f_path").unwrap();
        assert_eq!(btf.member_offset("qstr", "name").unwrap(), 8);
        // int security_task_kill(struct task_struct *, struct kernel_siginfo *, int, const struct cred *)
        assert_eq!(btf.function_params("security_task_kill").unwrap(), 4);
        assert!(btf.function_params("no_such_function").is_err());
    }
}

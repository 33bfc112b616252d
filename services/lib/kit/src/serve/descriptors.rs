//! Which protobuf files a server's reflection serves: the file that declares its service and
//! every file that one imports, cut from the shared descriptor set (which declares all three
//! shop services).
//!
//! The files are decoded (tonic-reflection keeps what it is given only for the lifetime of its
//! builder's input, so a cut set it serves must be owned): a custom option prost does not model
//! would be dropped. The shop's contracts use none.

use prost::Message;
use prost_types::{FileDescriptorProto, FileDescriptorSet};

/// Descriptors that cannot describe a service.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    #[error("a descriptor set does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("no descriptor declares the service {0}")]
    UnknownService(String),
    #[error("{file} imports {missing}, which no descriptor set holds")]
    MissingImport { file: String, missing: String },
}

/// The files of some encoded descriptor sets, each once (the first set naming a file wins).
#[derive(Debug)]
pub struct Files {
    files: Vec<FileDescriptorProto>,
}

impl Files {
    pub fn decode(sets: &[&[u8]]) -> Result<Files, DescriptorError> {
        let mut files: Vec<FileDescriptorProto> = Vec::new();
        for set in sets {
            for file in FileDescriptorSet::decode(*set)?.file {
                if files.iter().all(|f| f.name != file.name) {
                    files.push(file);
                }
            }
        }
        Ok(Files { files })
    }

    /// The file that declares `service` (fully qualified, `package.Service`) and every file it
    /// imports, directly or not.
    pub fn serving(&self, service: &str) -> Result<FileDescriptorSet, DescriptorError> {
        let home = self
            .files
            .iter()
            .find(|f| declares(f, service))
            .ok_or_else(|| DescriptorError::UnknownService(service.to_owned()))?;
        let mut chosen: Vec<&FileDescriptorProto> = Vec::new();
        let mut todo = vec![home];
        while let Some(file) = todo.pop() {
            if chosen.iter().any(|c| c.name == file.name) {
                continue;
            }
            for import in &file.dependency {
                let found = self.files.iter().find(|f| f.name() == import).ok_or_else(|| {
                    DescriptorError::MissingImport {
                        file: file.name().to_owned(),
                        missing: import.clone(),
                    }
                })?;
                todo.push(found);
            }
            chosen.push(file);
        }
        Ok(FileDescriptorSet {
            file: chosen.into_iter().cloned().collect(),
        })
    }
}

fn declares(file: &FileDescriptorProto, service: &str) -> bool {
    let local = match file.package() {
        "" => Some(service),
        package => service
            .strip_prefix(package)
            .and_then(|rest| rest.strip_prefix('.')),
    };
    local.is_some_and(|local| file.service.iter().any(|s| s.name() == local))
}

#[cfg(test)]
mod tests {
    use prost_types::ServiceDescriptorProto;

    use super::*;

    fn file(name: &str, package: &str, services: &[&str], imports: &[&str]) -> FileDescriptorProto {
        FileDescriptorProto {
            name: Some(name.to_owned()),
            package: Some(package.to_owned()),
            dependency: imports.iter().map(|i| (*i).to_owned()).collect(),
            service: services
                .iter()
                .map(|s| ServiceDescriptorProto {
                    name: Some((*s).to_owned()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn names(set: &FileDescriptorSet) -> Vec<String> {
        let mut names: Vec<String> = set.file.iter().map(|f| f.name().to_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_service_gets_its_own_file_and_its_imports_only() {
        let shop = FileDescriptorSet {
            file: vec![
                file("common.proto", "google.protobuf", &[], &[]),
                file("empty.proto", "google.protobuf", &[], &[]),
                file("deep.proto", "shop.base", &[], &["common.proto"]),
                file("a.proto", "shop.a.v1", &["AService"], &["deep.proto"]),
                file(
                    "b.proto",
                    "shop.b.v1",
                    &["BService"],
                    &["common.proto", "empty.proto"],
                ),
            ],
        }
        .encode_to_vec();
        let files = Files::decode(&[&shop, tonic_health::pb::FILE_DESCRIPTOR_SET]).unwrap();
        let check = |service: &str, want: &[&str]| {
            assert_eq!(names(&files.serving(service).unwrap()), want, "{service}");
        };
        check("shop.a.v1.AService", &["a.proto", "common.proto", "deep.proto"]);
        check("shop.b.v1.BService", &["b.proto", "common.proto", "empty.proto"]);
        check("grpc.health.v1.Health", &["health.proto"]);
        for unknown in [
            "shop.a.v1.BService",
            "AService",
            "shop.a.v1",
            "shop.a.v1.AServiceX",
        ] {
            assert!(
                matches!(files.serving(unknown), Err(DescriptorError::UnknownService(_))),
                "{unknown}"
            );
        }
        let broken = FileDescriptorSet {
            file: vec![file("a.proto", "a", &["A"], &["gone.proto"])],
        }
        .encode_to_vec();
        let e = Files::decode(&[&broken]).unwrap().serving("a.A").unwrap_err();
        assert_eq!(
            e.to_string(),
            "a.proto imports gone.proto, which no descriptor set holds"
        );
    }

    #[test]
    fn the_first_set_naming_a_file_wins_and_bad_bytes_are_an_error() {
        let health = FileDescriptorSet::decode(tonic_health::pb::FILE_DESCRIPTOR_SET).unwrap();
        let other = FileDescriptorSet {
            file: vec![file("health.proto", "other", &["Health"], &[])],
        }
        .encode_to_vec();
        let files = Files::decode(&[tonic_health::pb::FILE_DESCRIPTOR_SET, &other]).unwrap();
        assert_eq!(files.serving("grpc.health.v1.Health").unwrap(), health);
        assert!(files.serving("other.Health").is_err());
        assert!(
            Files::decode(&[b"\x0a\xff"]).is_err(),
            "a truncated set is an error"
        );
    }
}

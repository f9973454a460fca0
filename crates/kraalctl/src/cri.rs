//! `kraalctl cri ...`: a look at what kraald serves on its CRI socket, for a node without
//! kubelet or crictl (cri-tools is in no registry this project can install from). Read-only
//! on purpose: creating pods is kubelet's job, and crictl's where it is installed.

use std::path::Path;

use clap::Subcommand;
use kraal_api::runtime::v1 as cri;
use kraal_api::runtime::v1::image_service_client::ImageServiceClient;
use kraal_api::runtime::v1::runtime_service_client::RuntimeServiceClient;
use serde_json::json;

use crate::client;
use crate::render::{clean, short_id};

/// Where kraald serves CRI unless told otherwise (kraald's `socket`).
pub const DEFAULT_SOCKET: &str = "/run/kraal/kraal.sock";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum CriCommand {
    /// The runtime's name and version (CRI Version)
    Version,
    /// Pod sandboxes (CRI ListPodSandbox)
    Pods,
    /// Containers of every pod (CRI ListContainers)
    Containers,
    /// Images in kraald's store (CRI ListImages)
    Images,
    /// The node as kraald found it at start: cgroup hierarchy and driver, kernel features,
    /// and the kraal features this node cannot give, with why (CRI Status, verbose)
    Node,
}

/// Makes the call on the CRI socket and renders the answer.
pub async fn run(socket: &Path, json: bool, command: CriCommand) -> anyhow::Result<String> {
    let channel = client::channel(socket, "CRI socket").await?;
    let mut runtime = RuntimeServiceClient::new(channel.clone());
    let answer = |status: tonic::Status| client::status_error(&status);
    Ok(match command {
        CriCommand::Version => {
            let response = runtime
                .version(cri::VersionRequest::default())
                .await
                .map_err(answer)?
                .into_inner();
            version(&response, json)
        }
        CriCommand::Pods => {
            let response = runtime
                .list_pod_sandbox(cri::ListPodSandboxRequest::default())
                .await
                .map_err(answer)?
                .into_inner();
            pods(&response.items, json)
        }
        CriCommand::Containers => {
            let response = runtime
                .list_containers(cri::ListContainersRequest::default())
                .await
                .map_err(answer)?
                .into_inner();
            containers(&response.containers, json)
        }
        CriCommand::Node => {
            let response = runtime
                .status(cri::StatusRequest { verbose: true })
                .await
                .map_err(answer)?
                .into_inner();
            node(&response, json)?
        }
        CriCommand::Images => {
            let response = ImageServiceClient::new(channel)
                .list_images(cri::ListImagesRequest::default())
                .await
                .map_err(answer)?
                .into_inner();
            images(&response.images, json)
        }
    })
}

fn version(response: &cri::VersionResponse, json: bool) -> String {
    if json {
        return line(json!({
            "version": response.version,
            "runtime_name": response.runtime_name,
            "runtime_version": response.runtime_version,
            "runtime_api_version": response.runtime_api_version,
        }));
    }
    format!(
        "{} {} (CRI {})\n",
        clean(&response.runtime_name),
        clean(&response.runtime_version),
        clean(&response.runtime_api_version)
    )
}

fn pods(items: &[cri::PodSandbox], json: bool) -> String {
    let rows = items.iter().map(|pod| {
        let (namespace, name, attempt) = pod
            .metadata
            .as_ref()
            .map_or(("", "", 0), |m| (&*m.namespace, &*m.name, m.attempt));
        let state = cri::PodSandboxState::try_from(pod.state).map_or("UNKNOWN", |s| {
            s.as_str_name().trim_start_matches("SANDBOX_")
        });
        (pod, namespace, name, attempt, state)
    });
    if json {
        let pods: Vec<_> = rows
            .map(|(pod, namespace, name, attempt, state)| {
                json!({"id": pod.id, "namespace": namespace, "name": name,
                       "attempt": attempt, "state": state, "created_at": pod.created_at})
            })
            .collect();
        return line(json!({ "pods": pods }));
    }
    table(
        ["POD ID", "STATE", "NAMESPACE/NAME", "ATTEMPT"],
        rows.map(|(pod, namespace, name, attempt, state)| {
            [
                short_id(&pod.id),
                state.to_owned(),
                clean(&format!("{namespace}/{name}")),
                attempt.to_string(),
            ]
        }),
    )
}

fn containers(items: &[cri::Container], json: bool) -> String {
    let rows = items.iter().map(|c| {
        let name = c.metadata.as_ref().map_or("", |m| &*m.name);
        let state = cri::ContainerState::try_from(c.state).map_or("UNKNOWN", |s| {
            s.as_str_name().trim_start_matches("CONTAINER_")
        });
        let image = c.image.as_ref().map_or("", |i| &*i.image);
        (c, name, state, image)
    });
    if json {
        let containers: Vec<_> = rows
            .map(|(c, name, state, image)| {
                json!({"id": c.id, "pod_sandbox_id": c.pod_sandbox_id, "name": name,
                       "state": state, "image": image, "created_at": c.created_at})
            })
            .collect();
        return line(json!({ "containers": containers }));
    }
    table(
        ["CONTAINER ID", "NAME", "STATE", "POD ID", "IMAGE"],
        rows.map(|(c, name, state, image)| {
            [
                short_id(&c.id),
                clean(name),
                state.to_owned(),
                short_id(&c.pod_sandbox_id),
                clean(image),
            ]
        }),
    )
}

fn images(items: &[cri::Image], json: bool) -> String {
    if json {
        let images: Vec<_> = items
            .iter()
            .map(|i| json!({"id": i.id, "repo_tags": i.repo_tags, "repo_digests": i.repo_digests, "size": i.size}))
            .collect();
        return line(json!({ "images": images }));
    }
    table(
        ["IMAGE ID", "TAGS", "SIZE"],
        items.iter().map(|i| {
            let tags = if i.repo_tags.is_empty() {
                "<none>".to_owned()
            } else {
                clean(&i.repo_tags.join(","))
            };
            let id = i.id.strip_prefix("sha256:").unwrap_or(&i.id);
            [short_id(id), tags, i.size.to_string()]
        }),
    )
}

/// kraald's node facts (Status info `node`, JSON kraald wrote).
fn node(response: &cri::StatusResponse, json: bool) -> anyhow::Result<String> {
    let text = response.info.get("node").ok_or_else(|| {
        anyhow::anyhow!("kraald's Status has no node facts (a kraald older than kraalctl?)")
    })?;
    let facts: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| anyhow::anyhow!("kraald's node facts are not JSON ({e}): {text:?}"))?;
    if json {
        return Ok(line(facts));
    }
    let s = |v: &serde_json::Value| clean(v.as_str().unwrap_or("?"));
    let yes = |v: &serde_json::Value| {
        if v.as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        }
    };
    let probes = &facts["probes"];
    let mut out = format!(
        "cgroup hierarchy: {}\ncgroup driver:    {}\nkernel:           {}\ncgroup2 (eBPF hooks): {}, BTF: {}, freezer: {}, PSI: {}\n",
        s(&facts["hierarchy"]),
        s(&facts["cgroup_driver"]),
        s(&facts["kernel"]),
        yes(&probes["cgroup2"]),
        yes(&probes["btf"]),
        probes["freezer"]
            .as_str()
            .map(clean)
            .unwrap_or_else(|| "none".into()),
        yes(&probes["psi"]),
    );
    match facts["unavailable"].as_array() {
        Some(list) if !list.is_empty() => {
            out.push_str("unavailable on this node:\n");
            for u in list {
                out.push_str(&format!("  {}: {}\n", s(&u["feature"]), s(&u["reason"])));
            }
        }
        _ => out.push_str("every kraal feature is available on this node\n"),
    }
    Ok(out)
}

fn line(value: serde_json::Value) -> String {
    format!("{value}\n")
}

/// Left-aligned columns, two spaces apart; the header alone when there are no rows.
fn table<const N: usize>(header: [&str; N], rows: impl Iterator<Item = [String; N]>) -> String {
    let rows: Vec<[String; N]> = std::iter::once(header.map(str::to_owned))
        .chain(rows)
        .collect();
    let mut widths = [0; N];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_table() {
        let pod = cri::PodSandbox {
            id: "0123456789abcdef0123".into(),
            metadata: Some(cri::PodSandboxMetadata {
                name: "web".into(),
                namespace: "shop".into(),
                uid: "u".into(),
                attempt: 1,
            }),
            state: cri::PodSandboxState::SandboxNotready as i32,
            ..Default::default()
        };
        assert_eq!(
            pods(&[pod], false),
            "POD ID         STATE     NAMESPACE/NAME  ATTEMPT\n\
             0123456789ab…  NOTREADY  shop/web        1\n"
        );
        assert_eq!(pods(&[], false), "POD ID  STATE  NAMESPACE/NAME  ATTEMPT\n");
    }

    #[test]
    fn containers_and_images() {
        let container = cri::Container {
            id: "c1".into(),
            pod_sandbox_id: "p1".into(),
            metadata: Some(cri::ContainerMetadata {
                name: "app\n".into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            state: cri::ContainerState::ContainerRunning as i32,
            ..Default::default()
        };
        assert_eq!(
            containers(&[container], false),
            "CONTAINER ID  NAME   STATE    POD ID  IMAGE\n\
             c1            app\\n  RUNNING  p1      busybox\n"
        );
        let image = cri::Image {
            id: "sha256:abc".into(),
            size: 42,
            ..Default::default()
        };
        assert_eq!(
            images(std::slice::from_ref(&image), false),
            "IMAGE ID  TAGS    SIZE\nabc       <none>  42\n"
        );
        let json: serde_json::Value = serde_json::from_str(&images(&[image], true)).unwrap();
        assert_eq!(json["images"][0]["id"], "sha256:abc");
    }

    #[test]
    fn node_facts_say_what_is_missing() {
        let mut response = cri::StatusResponse::default();
        assert!(node(&response, false).is_err());
        response.info.insert(
            "node".into(),
            r#"{"hierarchy":"hybrid","cgroup_driver":"cgroupfs","kernel":"6.1","probes":{"cgroup2":true,"btf":true,"freezer":"v1","psi":true},"unavailable":[{"feature":"memory-high throttling","reason":"v1 does not throttle"}]}"#.into(),
        );
        let text = node(&response, false).unwrap();
        assert!(text.contains("cgroup hierarchy: hybrid\n"), "{text}");
        assert!(text.contains("cgroup driver:    cgroupfs\n"), "{text}");
        assert!(text.contains("freezer: v1"), "{text}");
        assert!(
            text.contains("  memory-high throttling: v1 does not throttle\n"),
            "{text}"
        );
        let json = node(&response, true).unwrap();
        assert!(
            json.starts_with('{') && json.contains("\"unavailable\""),
            "{json}"
        );
    }

    #[test]
    fn version_line() {
        let response = cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "kraal".into(),
            runtime_version: "0.1.0".into(),
            runtime_api_version: "v1".into(),
        };
        assert_eq!(version(&response, false), "kraal 0.1.0 (CRI v1)\n");
    }
}

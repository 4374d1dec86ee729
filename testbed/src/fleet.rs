//! Simulated regions and their one control API.
//!
//! A [`Fleet`] is a set of named regions, each a list of [`RegionServer`] endpoints. In-process
//! callers switch a region with [`Fleet::set_mode`]; everyone else uses the control listener
//! ([`serve_control`]), the API the README documents for the demo:
//!
//! | request | effect |
//! |---|---|
//! | `POST /{region}/{mode}` | switches every endpoint of the region (`ok`, `refuse`, `blackhole`, `status=503`, `slow=500ms`, `reset`, `flap=300ms`) |
//! | `GET /{region}` | JSON: the mode last asked for and each endpoint's id, address and request counts |
//!
//! There is no per-endpoint control API: a fault is injected into a region, as it would be in
//! production (a whole cluster crashes, blackholes or answers 503).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::region::{Identity, Mode, RegionServer};

/// A region name the fleet does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no region `{0}`")]
pub struct UnknownRegion(pub String);

/// Named simulated regions, in the order they were added.
#[derive(Default)]
pub struct Fleet {
    regions: Vec<(String, Vec<RegionServer>)>,
}

impl Fleet {
    /// Starts `count` endpoints per region on ephemeral loopback ports, named
    /// `<region>-1`, `<region>-2`, ...: `Fleet::start(&[("fra", 2), ("ber", 2)])`.
    pub async fn start(layout: &[(&str, usize)]) -> std::io::Result<Self> {
        let mut fleet = Self::default();
        for (region, count) in layout {
            let addrs = vec![SocketAddr::from(([127, 0, 0, 1], 0)); *count];
            fleet.bind(region, &addrs).await?;
        }
        Ok(fleet)
    }

    /// Adds region `region` with one endpoint on each of `addrs` (port 0: an ephemeral port),
    /// named `<region>-1`, `<region>-2`, ...
    pub async fn bind(&mut self, region: &str, addrs: &[SocketAddr]) -> std::io::Result<()> {
        let mut servers = Vec::with_capacity(addrs.len());
        for (i, addr) in addrs.iter().enumerate() {
            let identity = Identity {
                region: region.to_string(),
                endpoint: format!("{region}-{}", i + 1),
            };
            servers.push(RegionServer::bind(*addr, identity).await?);
        }
        self.regions.push((region.to_string(), servers));
        Ok(())
    }

    /// The endpoints of region `name`.
    pub fn region(&self, name: &str) -> Result<&[RegionServer], UnknownRegion> {
        self.regions
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, servers)| servers.as_slice())
            .ok_or_else(|| UnknownRegion(name.to_string()))
    }

    /// Every region with its endpoints, in the order they were added.
    pub fn regions(&self) -> impl Iterator<Item = (&str, &[RegionServer])> {
        self.regions
            .iter()
            .map(|(name, servers)| (name.as_str(), servers.as_slice()))
    }

    /// Switches every endpoint of region `name` to `mode`.
    pub fn set_mode(&self, name: &str, mode: Mode) -> Result<(), UnknownRegion> {
        for server in self.region(name)? {
            server.set_mode(mode.clone());
        }
        Ok(())
    }

    /// Stops every endpoint and closes its listener.
    pub async fn shutdown(self) {
        for server in self.regions.into_iter().flat_map(|(_, servers)| servers) {
            server.shutdown().await;
        }
    }
}

/// Serves the control API of `fleet` on `listener` until the task is dropped.
pub async fn serve_control(listener: TcpListener, fleet: Arc<Fleet>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let fleet = fleet.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let fleet = fleet.clone();
                async move { Ok::<_, Infallible>(control(&fleet, &req)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn control(fleet: &Fleet, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r
    };
    let path = req.uri().path().trim_matches('/');
    let (region, mode) = match path.split_once('/') {
        Some((region, mode)) => (region, Some(mode)),
        None => (path, None),
    };
    let servers = match fleet.region(region) {
        Ok(servers) => servers,
        Err(_) if region.is_empty() => {
            return reply(
                StatusCode::NOT_FOUND,
                "use POST /{region}/{mode} or GET /{region}\n".into(),
            )
        }
        Err(e) => return reply(StatusCode::NOT_FOUND, format!("{e}\n")),
    };
    match (req.method(), mode) {
        (&Method::POST, Some(mode)) => match mode.parse::<Mode>() {
            Ok(mode) => {
                for server in servers {
                    server.set_mode(mode.clone());
                }
                reply(StatusCode::OK, format!("{region}: {mode:?}\n"))
            }
            Err(e) => reply(StatusCode::BAD_REQUEST, format!("{e}\n")),
        },
        (&Method::GET, None) => reply(StatusCode::OK, format!("{}\n", region_json(servers))),
        (_, Some(_)) => reply(StatusCode::METHOD_NOT_ALLOWED, "use POST\n".into()),
        (_, None) => reply(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into()),
    }
}

fn region_json(servers: &[RegionServer]) -> serde_json::Value {
    let mode = servers
        .first()
        .map(|s| s.requested_mode().to_string())
        .unwrap_or_default();
    let endpoints: Vec<serde_json::Value> = servers
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": s.identity().endpoint,
                "address": s.addr().to_string(),
                "requests": s.requests(),
                "unsafe_requests": s.unsafe_requests(),
                "connections": s.connections(),
            })
        })
        .collect();
    serde_json::json!({ "mode": mode, "endpoints": endpoints })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `POST` (or `GET`) `path` on the control listener: (status, body).
    async fn call(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
        let (status, body) = crate::launcher::http_request(addr, method, path, "control", None)
            .await
            .expect("control call");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn the_control_api_switches_a_whole_region_and_reports_it() {
        let fleet = Arc::new(
            Fleet::start(&[("fra", 2), ("ber", 1)])
                .await
                .expect("fleet"),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let control = tokio::spawn(serve_control(listener, fleet.clone()));

        assert_eq!(
            call(addr, "POST", "/fra/status=503").await,
            (200, "fra: Status(503)\n".into())
        );
        let fra = fleet.region("fra").expect("fra");
        assert!(fra.iter().all(|s| s.mode() == Mode::Status(503)));
        assert_eq!(fleet.region("ber").expect("ber")[0].mode(), Mode::Ok);

        let (code, body) = call(addr, "GET", "/fra").await;
        assert_eq!(code, 200);
        let doc: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(doc["mode"], "status=503");
        assert_eq!(doc["endpoints"][1]["id"], "fra-2");

        assert_eq!(call(addr, "POST", "/ams/ok").await.0, 404);
        assert_eq!(call(addr, "POST", "/fra/melt").await.0, 400);
        assert_eq!(call(addr, "GET", "/fra/ok").await.0, 405);
        assert_eq!(call(addr, "POST", "/").await.0, 404);
        assert_eq!(
            fleet.set_mode("ams", Mode::Ok),
            Err(UnknownRegion("ams".into()))
        );
        control.abort();
    }
}

//! An Envoy ext_authz gRPC service that allows every request and checks nothing: the
//! reference `bench/compare.py` measures Keyward's ext_authz against, so that what Envoy's
//! own gRPC client costs is told apart from what Keyward's check costs.
//! Usage: `null_ext_authz 127.0.0.1:PORT`

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::rpc;

struct AllowAll;

#[tonic::async_trait]
impl Authorization for AllowAll {
    async fn check(
        &self,
        _request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(CheckResponse {
            status: Some(rpc::Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
            ..Default::default()
        }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::args()
        .nth(1)
        .ok_or("usage: null_ext_authz 127.0.0.1:PORT")?
        .parse()?;
    tonic::transport::Server::builder()
        .add_service(AuthorizationServer::new(AllowAll))
        .serve(address)
        .await?;
    Ok(())
}

//! Lists as streams: every page, fetched as the caller reads.

use std::future::Future;

use futures_util::stream::{self, Stream, TryStreamExt};
use keyward_proto::{
    ApiKey, App, AuditEntry, ListAuditParams, ListKeysParams, ListWebhookDeliveriesParams, Page,
    PageParams, WebhookDelivery, WebhookEndpoint,
};

use crate::{Client, Error};

/// Every item of a cursor-paginated list: `fetch` is given each page's cursor (`None` first)
/// and the stream ends after the page without a `next_cursor`.
///
/// ```no_run
/// # async fn example(client: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
/// use futures_util::TryStreamExt;
/// use keyward_sdk::proto::PageParams;
///
/// let apps: Vec<_> = keyward_sdk::paginate(|cursor| {
///     let client = client.clone();
///     async move { client.list_apps(&PageParams { limit: Some(100), cursor }).await }
/// })
/// .try_collect()
/// .await?;
/// # Ok(()) }
/// ```
pub fn paginate<T, F, Fut>(fetch: F) -> impl Stream<Item = Result<T, Error>>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<Page<T>, Error>>,
{
    // State: the fetcher, and the next cursor (`None` once the last page was read).
    stream::try_unfold(
        (fetch, Some(None::<String>)),
        |(mut fetch, cursor)| async move {
            let Some(cursor) = cursor else {
                return Ok(None);
            };
            let page = fetch(cursor).await?;
            let next = page.next_cursor.map(Some);
            Ok(Some((
                stream::iter(page.data.into_iter().map(Ok)),
                (fetch, next),
            )))
        },
    )
    .try_flatten()
}

impl Client {
    /// Every app, page after page.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), keyward_sdk::Error> {
    /// use futures_util::TryStreamExt;
    /// # let keyward = keyward_sdk::Client::new("sk_live_…");
    /// let apps: Vec<_> = keyward.stream_apps().try_collect().await?;
    /// # Ok(()) }
    /// ```
    pub fn stream_apps(&self) -> impl Stream<Item = Result<App, Error>> + '_ {
        paginate(move |cursor| async move {
            self.list_apps(&PageParams {
                limit: Some(100),
                cursor,
            })
            .await
        })
    }

    /// Every key of an app that matches `params`' filters (its `cursor` is ignored).
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), keyward_sdk::Error> {
    /// use futures_util::TryStreamExt;
    /// # let keyward = keyward_sdk::Client::new("sk_live_…");
    /// let params = keyward_sdk::proto::ListKeysParams {
    ///     status: Some("active".into()),
    ///     ..Default::default()
    /// };
    /// let mut keys = std::pin::pin!(keyward.stream_keys("acme", params));
    /// while let Some(key) = keys.try_next().await? {
    ///     println!("{} {}", key.id, key.name);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn stream_keys<'a>(
        &'a self,
        app_slug: &'a str,
        params: ListKeysParams,
    ) -> impl Stream<Item = Result<ApiKey, Error>> + 'a {
        paginate(move |cursor| {
            let params = ListKeysParams {
                cursor,
                ..params.clone()
            };
            async move { self.list_keys(app_slug, &params).await }
        })
    }

    /// Every audit entry that matches `params`' filters, newest first.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), keyward_sdk::Error> {
    /// use futures_util::TryStreamExt;
    /// # let keyward = keyward_sdk::Client::new("sk_live_…");
    /// let entries: Vec<_> = keyward
    ///     .stream_audit(Default::default())
    ///     .try_collect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn stream_audit(
        &self,
        params: ListAuditParams,
    ) -> impl Stream<Item = Result<AuditEntry, Error>> + '_ {
        paginate(move |cursor| {
            let params = ListAuditParams {
                cursor,
                ..params.clone()
            };
            async move { self.list_audit(&params).await }
        })
    }

    /// Every webhook endpoint, page after page.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), keyward_sdk::Error> {
    /// use futures_util::TryStreamExt;
    /// # let keyward = keyward_sdk::Client::new("sk_live_…");
    /// let endpoints: Vec<_> = keyward.stream_webhook_endpoints().try_collect().await?;
    /// # Ok(()) }
    /// ```
    pub fn stream_webhook_endpoints(
        &self,
    ) -> impl Stream<Item = Result<WebhookEndpoint, Error>> + '_ {
        paginate(move |cursor| async move {
            self.list_webhook_endpoints(&PageParams {
                limit: Some(100),
                cursor,
            })
            .await
        })
    }

    /// Every delivery of an endpoint, newest first.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), keyward_sdk::Error> {
    /// use futures_util::TryStreamExt;
    /// # let keyward = keyward_sdk::Client::new("sk_live_…");
    /// let mut deliveries = std::pin::pin!(keyward.stream_webhook_deliveries("whe_…"));
    /// while let Some(delivery) = deliveries.try_next().await? {
    ///     println!("{} {} {}", delivery.id, delivery.event_type, delivery.status);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn stream_webhook_deliveries<'a>(
        &'a self,
        endpoint_id: &'a str,
    ) -> impl Stream<Item = Result<WebhookDelivery, Error>> + 'a {
        paginate(move |cursor| async move {
            self.list_webhook_deliveries(
                endpoint_id,
                &ListWebhookDeliveriesParams {
                    limit: Some(100),
                    cursor,
                },
            )
            .await
        })
    }
}

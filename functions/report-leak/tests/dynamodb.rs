//! Leak reports on DynamoDB (moto's server). What a report costs the table, counted from the
//! requests the SDK sends: a string that is not a secret key of this deployment costs
//! nothing, a well-formed one that no key has costs one read, a live key two (itself, and
//! its environment's leak policy, once per report), and a key reported again costs one read
//! and no write. And reports of one key racing each other: whichever write lands
//! first, the leak is recorded once and the key revoked once.

use keyward::domain::{
    Actor, EnvName, Issued, KeyPrefix, Kind, LeakDetails, LeakSource, Mint, Secret,
    create_environment, create_key,
};
use keyward::leak::{Finding, Findings, Reported, Responder};
use keyward::secrets::NoSecrets;
use keyward::store::{DynamoStore, KeyStore, PageRequest};
use keyward::testing::orders_key;

/// The environment `production` in `store`, and a live `orders:read` key in it.
async fn a_key_in(store: &DynamoStore, mint: &Mint) -> Issued {
    let now = keyward::now();
    let production = EnvName::parse("production").unwrap();
    let env = create_environment(&production, Actor::operator("t"), mint, now);
    store.apply(&env.change).await.unwrap();
    let issued = create_key(
        &production,
        orders_key("ci"),
        Actor::operator("t"),
        mint,
        now,
    )
    .unwrap();
    store.apply(&issued.change).await.unwrap();
    issued
}

#[tokio::test]
async fn only_a_well_formed_secret_key_costs_a_read_and_only_a_live_one_a_write() {
    let (table, operations) = keyward::testing::counted_moto_table("leak-reads").await;
    let store = table.store;
    let (mint, now) = (keyward::mint(), keyward::now());
    let production = EnvName::parse("production").unwrap();
    let issued = a_key_in(&store, &mint).await;
    let responder = Responder {
        store: &store,
        secrets: &NoSecrets,
        mint: &mint,
        prefix: &KeyPrefix::default(),
    };
    let details = LeakDetails::default();
    let report = |secrets: Vec<String>| {
        let (responder, details, operations) = (&responder, &details, &operations);
        async move {
            operations.clear();
            let found = responder
                .report(&Reported::all(&secrets, details), LeakSource::Report, now)
                .await
                .unwrap();
            (Findings::of(&found), operations.counts())
        }
    };

    let secret = issued.secret.expose();
    let other = keyward::mint().with_key_prefix(KeyPrefix::parse("acme").unwrap());
    let mut noise = Vec::new();
    for i in 0..1000 {
        noise.push(match i % 4 {
            0 => format!(
                "{}{}",
                &secret[..secret.len() - 1],
                if secret.ends_with('a') { 'b' } else { 'a' }
            ),
            1 => Secret::generate(&other, Kind::Secret, &production)
                .expose()
                .to_owned(),
            2 => Secret::generate(&mint, Kind::Publishable, &production)
                .expose()
                .to_owned(),
            _ => format!("kw_sk_production_{i:038}"),
        });
    }
    let (found, sent) = report(noise).await;
    assert_eq!((found.not_keys, found.publishable), (750, 250));
    assert!(
        sent.is_empty(),
        "1,000 strings that are no key of this deployment: {sent:?}"
    );

    let unknown = Secret::generate(&mint, Kind::Secret, &production);
    let (found, sent) = report(vec![unknown.expose().to_owned(); 3]).await;
    assert_eq!(found.unknown, 3);
    assert_eq!(
        sent.into_iter().collect::<Vec<_>>(),
        [("GetItem".to_owned(), 1)],
        "the same key three times is read once"
    );

    let (found, sent) = report(vec![secret.to_owned()]).await;
    assert_eq!(found.keys, 1);
    assert_eq!(
        sent.get("GetItem"),
        Some(&2),
        "one read by its hash, one of its environment's leak policy: {sent:?}"
    );
    assert!(
        sent.get("TransactWriteItems").is_some_and(|w| *w <= 2),
        "{sent:?}"
    );

    let (found, sent) = report(vec![secret.to_owned()]).await;
    assert_eq!(found.keys, 1);
    assert_eq!(
        sent.into_iter().collect::<Vec<_>>(),
        [("GetItem".to_owned(), 1)],
        "a key reported again is read and left as it is"
    );
}

/// A report that says it is GitHub's but lacks GitHub's signature is refused before anything
/// is read: whoever sends it learns nothing and costs nothing.
#[tokio::test]
async fn a_github_report_without_githubs_signature_reads_nothing() {
    let (table, operations) = keyward::testing::counted_moto_table("leak-unsigned").await;
    let now = keyward::now();
    let seeded = keyward::testing::seeded("production", now).await;
    let signer = keyward::testing::GithubSigner::start();
    keyward::leak::github::install(keyward::leak::github::GithubKeys::new(&signer.url).unwrap());
    let body = serde_json::json!([{"token": seeded.secret.expose(), "type": "t"}]).to_string();
    let stranger = keyward::testing::GithubSigner::start().sign(body.as_bytes());
    let request = lambda_http::http::Request::builder()
        .method("POST")
        .uri("/v1/leaks/github")
        .header(
            "Github-Public-Key-Identifier",
            keyward::testing::GithubSigner::IDENTIFIER,
        )
        .header("Github-Public-Key-Signature", stranger)
        .body(lambda_http::Body::from(body))
        .unwrap();
    operations.clear();
    let response = report_leak::handler(seeded.context_on(&table.store), request, now).await;
    assert_eq!(response.status(), 401);
    assert_eq!(operations.total(), 0, "{:?}", operations.counts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_reports_of_one_key_at_once_record_one_leak_and_one_revocation() {
    let store = keyward::testing::moto_table("leak-race").await.store;
    let (mint, now) = (keyward::mint(), keyward::now());
    let issued = a_key_in(&store, &mint).await;
    let prefix = KeyPrefix::default();
    let responder = Responder {
        store: &store,
        secrets: &NoSecrets,
        mint: &mint,
        prefix: &prefix,
    };
    let reported = Reported::all(
        &[issued.secret.expose().to_owned()],
        &LeakDetails::default(),
    );
    let report = || responder.report(&reported, LeakSource::Report, now);
    let (a, b, c, d) = tokio::join!(report(), report(), report(), report());
    for found in [a, b, c, d] {
        assert_eq!(found.unwrap(), [Finding::Key]);
    }
    let page = PageRequest {
        limit: 10,
        after: None,
    };
    let entries = store.key_activity(&issued.key.id, &page).await.unwrap();
    let actions: Vec<&str> = entries
        .items
        .iter()
        .map(|e| e.event.action().as_str())
        .collect();
    assert_eq!(actions, ["key.revoked", "key.leaked", "key.created"]);
}

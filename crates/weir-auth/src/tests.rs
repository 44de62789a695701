use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use weir_manifest::{AuthSpec, JwtSpec, RoleSpec, SecretSource};
use weir_test_support::auth_fixture;

use crate::{Action, AdminOp, ApiKeyStore, AuthError, Authenticator, Credential};

const SECRET: &str = "an HS256 secret of at least thirty-two bytes";

fn jwt_spec() -> JwtSpec {
    JwtSpec {
        algorithms: vec![],
        secret: None,
        public_key: None,
        jwks: None,
        jwks_refresh_secs: 300,
        issuer: Some("https://idp.test".to_owned()),
        audience: Some("weir".to_owned()),
        leeway_secs: 5,
        principal_claim: "sub".to_owned(),
        roles_claim: "roles".to_owned(),
    }
}

fn spec(jwt: Option<JwtSpec>) -> AuthSpec {
    AuthSpec {
        jwt,
        roles: BTreeMap::from([(
            "writer".to_owned(),
            RoleSpec {
                publish: vec!["orders.*".to_owned()],
                subscribe: vec!["orders.*".to_owned()],
                admin: vec!["replay".to_owned()],
                views: vec!["orders-*".to_owned(), "w*".to_owned()],
                routes: vec!["items".to_owned()],
            },
        )]),
        principals: BTreeMap::from([("ops".to_owned(), vec!["admin".to_owned()])]),
        ..AuthSpec::default()
    }
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims(exp_in: i64) -> serde_json::Value {
    json!({
        "sub": "alice",
        "roles": ["writer"],
        "iss": "https://idp.test",
        "aud": "weir",
        "exp": (now() as i64 + exp_in),
    })
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &serde_json::Value) -> String {
    let key = match alg {
        Algorithm::HS256 => EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        Algorithm::RS256 => {
            EncodingKey::from_rsa_pem(&std::fs::read(auth_fixture("rsa-private.pem")).unwrap())
                .unwrap()
        }
        Algorithm::ES256 => {
            EncodingKey::from_ec_pem(&std::fs::read(auth_fixture("ec-private.pem")).unwrap())
                .unwrap()
        }
        _ => unreachable!(),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn bearer(token: &str) -> Vec<u8> {
    format!("Bearer {token}").into_bytes()
}

async fn authenticator(dir: &std::path::Path, jwt: Option<JwtSpec>) -> Authenticator {
    let keys = Arc::new(ApiKeyStore::open(dir).unwrap());
    Authenticator::new(spec(jwt), keys).await.unwrap()
}

#[tokio::test]
async fn api_keys_are_created_verified_revoked_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let auth = authenticator(dir.path(), None).await;
    let (info, key) = auth
        .keys()
        .create("alice", vec!["writer".to_owned()], None)
        .unwrap();
    let principal = auth.authenticate(Some(&bearer(&key))).unwrap();
    assert_eq!(principal.name, "alice");
    assert_eq!(
        principal.credential,
        Credential::ApiKey {
            id: info.id.clone()
        }
    );
    auth.authorize(&principal, Action::Publish("orders.eu"))
        .unwrap();
    auth.authorize(&principal, Action::Admin(AdminOp::Replay))
        .unwrap();
    let denied = auth
        .authorize(&principal, Action::Publish("billing"))
        .unwrap_err();
    assert!(
        denied.to_string().contains("publish = [\"billing\"]"),
        "{denied}"
    );
    assert!(
        auth.authorize(&principal, Action::Admin(AdminOp::Deploy))
            .is_err()
    );
    assert!(auth.authorize(&principal, Action::FullAdmin).is_err());
    // Views by their role's `views` patterns.
    auth.authorize(&principal, Action::ReadView("orders-by-customer"))
        .unwrap();
    let denied = auth
        .authorize(&principal, Action::ReadView("payroll"))
        .unwrap_err();
    assert!(
        denied.to_string().contains("views = [\"payroll\"]"),
        "{denied}"
    );
    // weir's own views only by name, never by a pattern.
    auth.authorize(&principal, Action::ReadView("warehouse"))
        .unwrap();
    assert!(
        auth.authorize(&principal, Action::ReadView("weir-jobs"))
            .is_err()
    );

    // The secret is not on disk, only its hash.
    let file = std::fs::read_to_string(dir.path().join("auth/api-keys.json")).unwrap();
    assert!(!file.contains(&key[key.len() - 64..]));

    // A wrong secret with a real id, and an unknown id.
    let mut wrong = key.clone();
    wrong.replace_range(key.len() - 4.., "0000");
    let wrong = if wrong == key {
        key.replace("0000", "1111")
    } else {
        wrong
    };
    assert_eq!(
        auth.authenticate(Some(&bearer(&wrong))).unwrap_err().code(),
        "unknown-key"
    );
    let unknown = format!("weir_{}_{}", "0".repeat(16), "0".repeat(64));
    assert_eq!(
        auth.authenticate(Some(&bearer(&unknown))).unwrap_err(),
        AuthError::UnknownKey
    );

    // Revoked through another store on the same directory (another process): seen
    // within a second.
    let other = ApiKeyStore::open(dir.path()).unwrap();
    other.revoke(&info.id).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        auth.authenticate(Some(&bearer(&key))).unwrap_err().code(),
        "revoked-key"
    );
    assert!(other.list().unwrap()[0].revoked_at.is_some());

    let (_, expired) = auth
        .keys()
        .create(
            "bob",
            vec![],
            Some(time::OffsetDateTime::now_utc() - time::Duration::seconds(1)),
        )
        .unwrap();
    assert_eq!(
        auth.authenticate(Some(&bearer(&expired)))
            .unwrap_err()
            .code(),
        "expired-key"
    );
}

#[tokio::test]
async fn concurrent_creates_from_two_stores_keep_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let a = Arc::new(ApiKeyStore::open(dir.path()).unwrap());
    let b = Arc::new(ApiKeyStore::open(dir.path()).unwrap());
    let mut threads = Vec::new();
    for store in [a.clone(), b.clone()] {
        threads.push(std::thread::spawn(move || {
            for i in 0..20 {
                store.create(&format!("p{i}"), vec![], None).unwrap();
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(a.list().unwrap().len(), 40);
}

#[tokio::test]
async fn malformed_headers_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let auth = authenticator(dir.path(), None).await;
    assert_eq!(auth.authenticate(None).unwrap_err(), AuthError::Missing);
    for header in [
        &b"Basic dXNlcjpwYXNz"[..],
        b"Bearer",
        b"Bearer ",
        b"\xff\xfe",
        b"Bearer weir_short",
    ] {
        assert_eq!(
            auth.authenticate(Some(header)).unwrap_err().code(),
            "malformed-credentials",
            "{:?}",
            String::from_utf8_lossy(header)
        );
    }
    // A JWT where none is configured.
    assert_eq!(
        auth.authenticate(Some(b"Bearer a.b.c")).unwrap_err(),
        AuthError::JwtDisabled
    );
}

#[tokio::test]
async fn hs256_tokens_are_checked_for_signature_expiry_audience_and_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("jwt.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let auth = authenticator(
        dir.path(),
        Some(JwtSpec {
            secret: Some(SecretSource::File(secret_file)),
            ..jwt_spec()
        }),
    )
    .await;
    let good = sign(Algorithm::HS256, None, &claims(60));
    let principal = auth.authenticate(Some(&bearer(&good))).unwrap();
    assert_eq!(principal.name, "alice");
    assert_eq!(principal.roles, ["writer"]);
    assert_eq!(principal.credential, Credential::Jwt);

    let expired = sign(Algorithm::HS256, None, &claims(-60));
    assert_eq!(
        auth.authenticate(Some(&bearer(&expired))).unwrap_err(),
        AuthError::TokenExpired
    );
    // Within the leeway (5 s) an expired token still passes.
    let skewed = sign(Algorithm::HS256, None, &claims(-2));
    auth.authenticate(Some(&bearer(&skewed))).unwrap();

    let mut wrong_aud = claims(60);
    wrong_aud["aud"] = json!("someone-else");
    assert_eq!(
        auth.authenticate(Some(&bearer(&sign(Algorithm::HS256, None, &wrong_aud))))
            .unwrap_err()
            .code(),
        "wrong-audience"
    );
    let mut wrong_iss = claims(60);
    wrong_iss["iss"] = json!("https://evil.test");
    assert_eq!(
        auth.authenticate(Some(&bearer(&sign(Algorithm::HS256, None, &wrong_iss))))
            .unwrap_err()
            .code(),
        "wrong-issuer"
    );
    let mut no_exp = claims(60);
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        auth.authenticate(Some(&bearer(&sign(Algorithm::HS256, None, &no_exp))))
            .unwrap_err()
            .code(),
        "invalid-token"
    );
    // Tampered payload: the signature no longer verifies.
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = sign(
        Algorithm::HS256,
        None,
        &json!({"sub": "mallory", "exp": now() + 60}),
    )
    .split('.')
    .nth(1)
    .unwrap()
    .to_owned();
    assert_eq!(
        auth.authenticate(Some(&bearer(&parts.join("."))))
            .unwrap_err(),
        AuthError::BadSignature
    );
    // RS256 is not accepted by a secret-only configuration.
    assert_eq!(
        auth.authenticate(Some(&bearer(&sign(Algorithm::RS256, None, &claims(60)))))
            .unwrap_err()
            .code(),
        "algorithm-not-accepted"
    );
    // An unsigned token ("alg": "none") does not even decode as a header we accept.
    let none = format!(
        "{}.{}.",
        base64_url(br#"{"alg":"none","typ":"JWT"}"#),
        base64_url(claims(60).to_string().as_bytes())
    );
    assert!(auth.authenticate(Some(&bearer(&none))).is_err());
}

fn base64_url(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            let _ = out.write_char(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn rs256_and_es256_verify_with_pem_keys_and_a_jwks() {
    let dir = tempfile::tempdir().unwrap();
    for (pem, alg) in [
        ("rsa-public.pem", Algorithm::RS256),
        ("ec-public.pem", Algorithm::ES256),
    ] {
        let auth = authenticator(
            dir.path(),
            Some(JwtSpec {
                public_key: Some(auth_fixture(pem)),
                ..jwt_spec()
            }),
        )
        .await;
        let principal = auth
            .authenticate(Some(&bearer(&sign(alg, None, &claims(60)))))
            .unwrap();
        assert_eq!(principal.name, "alice");
    }
    let auth = authenticator(
        dir.path(),
        Some(JwtSpec {
            jwks: Some(auth_fixture("jwks.json").to_string_lossy().into_owned()),
            ..jwt_spec()
        }),
    )
    .await;
    for (kid, alg) in [("rsa-1", Algorithm::RS256), ("ec-1", Algorithm::ES256)] {
        auth.authenticate(Some(&bearer(&sign(alg, Some(kid), &claims(60)))))
            .unwrap();
    }
    assert_eq!(
        auth.authenticate(Some(&bearer(&sign(
            Algorithm::RS256,
            Some("rsa-9"),
            &claims(60)
        ))))
        .unwrap_err(),
        AuthError::UnknownKeyId("rsa-9".to_owned())
    );
    // The RSA key's id with an ES256 signature: refused, not tried.
    assert_eq!(
        auth.authenticate(Some(&bearer(&sign(
            Algorithm::ES256,
            Some("rsa-1"),
            &claims(60)
        ))))
        .unwrap_err()
        .code(),
        "algorithm-not-accepted"
    );
}

#[tokio::test]
async fn a_jwks_file_is_refreshed_when_a_token_names_a_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let full: serde_json::Value =
        serde_json::from_slice(&std::fs::read(auth_fixture("jwks.json")).unwrap()).unwrap();
    let only_ec = json!({"keys": [full["keys"][1].clone()]});
    std::fs::write(&jwks, only_ec.to_string()).unwrap();
    let auth = authenticator(
        dir.path(),
        Some(JwtSpec {
            jwks: Some(jwks.to_string_lossy().into_owned()),
            ..jwt_spec()
        }),
    )
    .await;
    let rsa = sign(Algorithm::RS256, Some("rsa-1"), &claims(60));
    assert_eq!(
        auth.authenticate(Some(&bearer(&rsa))).unwrap_err().code(),
        "unknown-key-id"
    );
    std::fs::write(&jwks, full.to_string()).unwrap();
    // The unknown kid woke the refresher; it re-reads the set and the key works.
    let mut accepted = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if auth.authenticate(Some(&bearer(&rsa))).is_ok() {
            accepted = true;
            break;
        }
    }
    assert!(accepted, "the new key was never loaded");
}

#[tokio::test]
async fn principals_get_roles_by_name_and_short_secrets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let auth = authenticator(dir.path(), None).await;
    let (_, key) = auth.keys().create("ops", vec![], None).unwrap();
    let ops = auth.authenticate(Some(&bearer(&key))).unwrap();
    assert_eq!(ops.roles, ["admin"]);
    auth.authorize(&ops, Action::FullAdmin).unwrap();

    short_secrets_are_refused(dir.path()).await;
}

async fn short_secrets_are_refused(dir: &std::path::Path) {
    let short = dir.join("short.secret");
    std::fs::write(&short, "too short").unwrap();
    let keys = Arc::new(ApiKeyStore::open(dir).unwrap());
    let error = Authenticator::new(
        spec(Some(JwtSpec {
            secret: Some(SecretSource::File(short)),
            ..jwt_spec()
        })),
        keys,
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("at least 32"), "{error}");
}

#[test]
fn durations_parse() {
    assert_eq!(
        crate::parse_duration("90d").unwrap(),
        Duration::from_secs(90 * 86_400)
    );
    assert_eq!(
        crate::parse_duration("30m").unwrap(),
        Duration::from_secs(1_800)
    );
    assert!(crate::parse_duration("0s").is_err());
    assert!(crate::parse_duration("ten days").is_err());
}

#[tokio::test]
async fn a_verified_token_is_kept_no_longer_than_its_exp() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("jwt.secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let auth = authenticator(
        dir.path(),
        Some(JwtSpec {
            secret: Some(SecretSource::File(secret_file)),
            leeway_secs: 0,
            ..jwt_spec()
        }),
    )
    .await;
    let token = sign(Algorithm::HS256, None, &claims(1));
    // Twice: the second answer comes from the verified tokens.
    for _ in 0..2 {
        assert_eq!(
            auth.authenticate(Some(&bearer(&token))).unwrap().name,
            "alice"
        );
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        auth.authenticate(Some(&bearer(&token))).unwrap_err(),
        AuthError::TokenExpired
    );
}

#[tokio::test]
async fn a_token_of_a_key_removed_from_the_jwks_is_refused_after_the_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let full: serde_json::Value =
        serde_json::from_slice(&std::fs::read(auth_fixture("jwks.json")).unwrap()).unwrap();
    std::fs::write(&jwks, full.to_string()).unwrap();
    let auth = authenticator(
        dir.path(),
        Some(JwtSpec {
            jwks: Some(jwks.to_string_lossy().into_owned()),
            jwks_refresh_secs: 1,
            ..jwt_spec()
        }),
    )
    .await;
    let ec = sign(Algorithm::ES256, Some("ec-1"), &claims(600));
    for _ in 0..2 {
        auth.authenticate(Some(&bearer(&ec))).unwrap();
    }
    // The EC key is rotated out; the verified token goes with it at the next refresh.
    let only_rsa = json!({"keys": [full["keys"][0].clone()]});
    std::fs::write(&jwks, only_rsa.to_string()).unwrap();
    let mut refused = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Err(e) = auth.authenticate(Some(&bearer(&ec))) {
            refused = Some(e.code());
            break;
        }
    }
    assert_eq!(
        refused,
        Some("unknown-key-id"),
        "the removed key's token was still accepted"
    );
}

//! A real OpenID provider on loopback for the tests of people's sign-in: oidc-provider-mock
//! (Authlib's authorization server behind a login form), with PKCE enforced
//! (tests/oidc/pkce_provider.py), which the test command installs and names in
//! `KEYWARD_TEST_OIDC_PROVIDER`. Each test starts its own, on a free port, and it is
//! stopped when the test drops it. Tokens come from it the way a browser gets them: the
//! person is set up, authorizes on the form, and the code is exchanged for tokens.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// The variable naming the provider's program, which the test command sets.
pub const PROVIDER_VAR: &str = "KEYWARD_TEST_OIDC_PROVIDER";

/// Where the provider sends the browser back; never followed here.
const REDIRECT_URI: &str = "http://127.0.0.1/callback";

/// A running OpenID provider on loopback, stopped when dropped.
pub struct Provider {
    child: Child,
    addr: SocketAddr,
    /// Its issuer, as its tokens and its discovery document name it.
    pub issuer: String,
}

impl Provider {
    /// Starts a provider with these options (`--token-max-age -120` issues tokens that
    /// expired two minutes before they were made).
    pub fn start(options: &[&str]) -> Self {
        let program = std::env::var(PROVIDER_VAR).expect(
            "KEYWARD_TEST_OIDC_PROVIDER is not set: run ./scripts/test, which installs the OpenID provider for these tests",
        );
        let mut child = Command::new(program)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(options)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the OpenID provider starts");
        let stderr = BufReader::new(child.stderr.take().expect("stderr is piped"));
        let (found, listening) = mpsc::channel();
        // The provider logs each request to stderr: the thread keeps reading it after the
        // address, so that a full pipe never stalls the provider.
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if let Some(rest) = line.split("running on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    let _ = found.send(addr.to_owned());
                }
            }
        });
        let addr: SocketAddr = listening
            .recv_timeout(Duration::from_secs(60))
            .expect("the OpenID provider says where it listens")
            .parse()
            .expect("a socket address");
        Self {
            child,
            addr,
            issuer: format!("http://{addr}"),
        }
    }

    /// An ID token for keyward's `client_id`, for the person `sub` with these claims (email,
    /// name, groups), got through the authorization code flow.
    pub fn token(&self, client_id: &str, sub: &str, claims: &Value) -> String {
        self.set_person(sub, claims);
        let authorize = format!(
            "{}/oauth2/authorize?client_id={client_id}&redirect_uri={REDIRECT_URI}&response_type=code&scope=openid%20profile%20email&state=s&nonce=n",
            self.issuer
        );
        let back = self.authorize(&authorize, sub);
        let code = back
            .split("code=")
            .nth(1)
            .and_then(|rest| rest.split('&').next())
            .expect("the redirect carries a code")
            .to_owned();
        let exchange = format!(
            "grant_type=authorization_code&code={code}&redirect_uri={REDIRECT_URI}&client_id={client_id}&client_secret=unused"
        );
        let form = "application/x-www-form-urlencoded";
        let (status, _, body) = self.send("POST", "/oauth2/token", form, &exchange);
        assert_eq!(status, 200, "the code is exchanged: {body}");
        let tokens: Value = serde_json::from_str(&body).expect("tokens as JSON");
        tokens["id_token"].as_str().expect("an ID token").to_owned()
    }

    /// Sets up the person `sub` with these claims, as the provider will sign them in.
    pub fn set_person(&self, sub: &str, claims: &Value) {
        let (status, _, body) = self.send(
            "PUT",
            &format!("/users/{sub}"),
            "application/json",
            &claims.to_string(),
        );
        assert_eq!(status, 204, "the person is set up: {body}");
    }

    /// The person `sub` authorizes on the provider's form at `authorize_url` (its
    /// authorization endpoint, with a client's query): where the provider sends the browser
    /// back, with the code or the error.
    pub fn authorize(&self, authorize_url: &str, sub: &str) -> String {
        let target = authorize_url
            .strip_prefix(self.issuer.as_str())
            .expect("the provider's own authorization endpoint");
        let form = "application/x-www-form-urlencoded";
        let (status, head, body) = self.send("POST", target, form, &format!("sub={sub}"));
        assert_eq!(status, 302, "the person authorizes: {body}");
        head.lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("location")
                    .then(|| value.trim().to_owned())
            })
            .expect("the provider sends the browser back")
    }

    /// The provider's published keys, as its JWKS serves them.
    pub fn jwks(&self) -> String {
        let (status, _, body) = self.send("GET", "/jwks", "application/json", "");
        assert_eq!(status, 200);
        body
    }

    /// One HTTP/1.1 exchange: the status, the head, the body.
    fn send(
        &self,
        method: &str,
        target: &str,
        content_type: &str,
        body: &str,
    ) -> (u16, String, String) {
        let mut stream = TcpStream::connect(self.addr).expect("the provider accepts");
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .expect("the request is sent");
        let mut raw = String::new();
        stream.read_to_string(&mut raw).expect("the answer is read");
        let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        (status, head.to_owned(), body.to_owned())
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

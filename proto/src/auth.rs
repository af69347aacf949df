//! Bearer tokens: the `authorization: Bearer <token>` header that every job and worker call
//! carries, a client interceptor that adds it, and the server-side check.

use sha2::{Digest, Sha256};
use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

/// A secret that callers must present. Compared through SHA-256 digests in constant time, so
/// neither the length nor a prefix of the token leaks through timing.
#[derive(Clone)]
pub struct Token {
    digest: [u8; 32],
    header: MetadataValue<tonic::metadata::Ascii>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// A token that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token is empty (after trimming whitespace).
    #[error("{origin}: the token is empty")]
    Empty {
        /// Where the token came from.
        origin: String,
    },
    /// The token has characters that cannot go in a header.
    #[error("{origin}: the token must be printable ASCII without spaces")]
    NotAscii {
        /// Where the token came from.
        origin: String,
    },
    /// The token file could not be read.
    #[error("cannot read the token file {origin}")]
    Read {
        /// The file.
        origin: String,
        /// Why.
        source: std::io::Error,
    },
}

impl Token {
    /// A token from its text (surrounding whitespace, e.g. a file's final newline, is dropped);
    /// `origin` names it in errors.
    pub fn new(text: &str, origin: &str) -> Result<Self, TokenError> {
        let token = text.trim();
        if token.is_empty() {
            return Err(TokenError::Empty {
                origin: origin.to_string(),
            });
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::NotAscii {
                origin: origin.to_string(),
            });
        }
        let header = format!("Bearer {token}").parse().map_err(|_| TokenError::NotAscii {
            origin: origin.to_string(),
        })?;
        Ok(Self {
            digest: Sha256::digest(token.as_bytes()).into(),
            header,
        })
    }

    /// Reads a token file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, TokenError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            origin: origin.clone(),
            source,
        })?;
        Self::new(&text, &origin)
    }

    /// The token in `file` when given, else in the environment variable `env`.
    pub fn from_file_or_env(file: Option<&std::path::Path>, env: &str) -> Result<Self, TokenError> {
        match file {
            Some(path) => Self::from_file(path),
            None => match std::env::var(env) {
                Ok(text) => Self::new(&text, &format!("${env}")),
                Err(_) => Err(TokenError::Empty {
                    origin: format!("no token file given and ${env} is not set"),
                }),
            },
        }
    }

    /// Whether `presented` is this token.
    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.iter().zip(self.digest).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    /// Server side: lets a request through only with this token; otherwise `Unauthenticated`.
    pub fn check<T>(&self, request: Request<T>) -> Result<Request<T>, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <token>"))?
            .to_str()
            .map_err(|_| Status::unauthenticated("malformed authorization header"))?;
        let token = presented
            .strip_prefix("Bearer ")
            .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <token>`"))?;
        if self.matches(token) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("wrong token"))
        }
    }

    /// Client side: adds this token to a request.
    pub fn attach<T>(&self, mut request: Request<T>) -> Result<Request<T>, Status> {
        request.metadata_mut().insert("authorization", self.header.clone());
        Ok(request)
    }
}

/// Client side: every call carries the token.
impl tonic::service::Interceptor for Token {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.attach(request)
    }
}

/// Server side: calls without the token are `Unauthenticated` and reach no handler.
#[derive(Debug, Clone)]
pub struct RequireToken(pub Token);

impl tonic::service::Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.0.check(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_token_passes() {
        let token = Token::new("s3cret\n", "test").unwrap();
        let signed = token.attach(Request::new(())).unwrap();
        assert!(token.check(signed).is_ok());
        let other = Token::new("s3cret2", "test").unwrap();
        let wrong = other.attach(Request::new(())).unwrap();
        assert_eq!(token.check(wrong).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(
            token.check(Request::new(())).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert!(matches!(Token::new(" \n", "f"), Err(TokenError::Empty { .. })));
        assert!(matches!(Token::new("a b", "f"), Err(TokenError::NotAscii { .. })));
    }
}

//! Validation of a registration: every field is checked and every problem reported at once.

/// What a client sends to register (already decoded from the transport).
#[derive(Debug, Clone)]
pub struct RegistrationInput<'a> {
    pub email: &'a str,
    pub username: &'a str,
    pub password: &'a str,
    pub full_name: &'a str,
}

/// A registration whose fields are valid: email trimmed and lowercased, names trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub email: String,
    pub username: String,
    pub password: String,
    pub full_name: String,
}

pub const MIN_PASSWORD_CHARS: usize = 10;
pub const MAX_PASSWORD_BYTES: usize = 1024;
const MAX_EMAIL_BYTES: usize = 254;
const MAX_NAME_CHARS: usize = 100;

impl Registration {
    /// Parses `input`, or returns `(field, problem)` for every invalid field.
    pub fn parse(input: &RegistrationInput<'_>) -> Result<Self, Vec<(&'static str, String)>> {
        let mut problems = Vec::new();
        let email = input.email.trim().to_lowercase();
        if let Err(problem) = check_email(&email) {
            problems.push(("email", problem));
        }
        let username = input.username.trim().to_owned();
        if username.is_empty() || username.chars().count() > 50 {
            problems.push(("username", "must be 1 to 50 characters".to_owned()));
        } else if !username
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            problems.push((
                "username",
                "may contain only letters, digits, `_`, `-` and `.`".to_owned(),
            ));
        }
        if input.password.chars().count() < MIN_PASSWORD_CHARS {
            problems.push((
                "password",
                format!("must be at least {MIN_PASSWORD_CHARS} characters"),
            ));
        } else if input.password.len() > MAX_PASSWORD_BYTES {
            problems.push((
                "password",
                format!("must be at most {MAX_PASSWORD_BYTES} bytes"),
            ));
        }
        let full_name = input.full_name.trim().to_owned();
        if full_name.is_empty() || full_name.chars().count() > MAX_NAME_CHARS {
            problems.push((
                "full_name",
                format!("must be 1 to {MAX_NAME_CHARS} characters"),
            ));
        } else if full_name.chars().any(char::is_control) {
            problems.push((
                "full_name",
                "must not contain control characters".to_owned(),
            ));
        }
        if problems.is_empty() {
            Ok(Registration {
                email,
                username,
                password: input.password.to_owned(),
                full_name,
            })
        } else {
            Err(problems)
        }
    }
}

fn check_email(email: &str) -> Result<(), String> {
    if email.is_empty() || email.len() > MAX_EMAIL_BYTES {
        return Err(format!("must be 1 to {MAX_EMAIL_BYTES} bytes"));
    }
    let Some((local, domain)) = email.rsplit_once('@') else {
        return Err("must look like name@example.com".to_owned());
    };
    let well_formed = !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if well_formed {
        Ok(())
    } else {
        Err("must look like name@example.com".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(email: &'a str, password: &'a str) -> RegistrationInput<'a> {
        RegistrationInput {
            email,
            username: "ada",
            password,
            full_name: "Ada Lovelace",
        }
    }

    #[test]
    fn valid_registration_is_normalised() {
        let r = Registration::parse(&input("  Ada@Example.COM ", "correct horse")).unwrap();
        assert_eq!(r.email, "ada@example.com");
    }

    #[test]
    fn every_bad_field_is_reported() {
        let bad = RegistrationInput {
            email: "not-an-email",
            username: "",
            password: "short",
            full_name: "",
        };
        let problems = Registration::parse(&bad).unwrap_err();
        let fields: Vec<_> = problems.iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, vec!["email", "username", "password", "full_name"]);
    }

    #[test]
    fn emails_need_a_domain_with_a_dot() {
        assert!(Registration::parse(&input("a@b", "0123456789")).is_err());
        assert!(Registration::parse(&input("@b.c", "0123456789")).is_err());
        assert!(Registration::parse(&input("a b@c.d", "0123456789")).is_err());
        assert!(Registration::parse(&input("a@b.c", "0123456789")).is_ok());
    }
}

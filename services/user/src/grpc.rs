//! The gRPC edge of the user service: decodes requests, checks who is calling, runs
//! commands, and maps every failure to a status once.

use std::sync::Arc;

use tillstream_events::{Role, UserStatus};
use tillstream_projections::queries::{Reads, UserRow};
use tillstream_proto::KeyedRequest;
use tillstream_proto::user::v1 as pb;
use tillstream_runtime::event_store::{CommandBus, CommandError, Committed};
use tillstream_runtime::gate::Gate;
use tillstream_runtime::grpc::{self, Caller, CommandContext, Violations};
use tillstream_runtime::tokens::TokenIssuer;
use tonic::{Request, Response, Status};

use crate::credentials::{self, CredentialError, CredentialRow, Credentials, EMAIL_CONSTRAINT};
use crate::domain::{Registration, RegistrationInput, User, UserCommand, UserError};

pub struct UserGrpc {
    pub(crate) commands: Arc<CommandBus<User>>,
    pub(crate) credentials: Credentials,
    pub(crate) issuer: TokenIssuer,
    pub(crate) gate: Gate,
    pub(crate) reads: Reads,
}

fn rejected(error: UserError) -> Status {
    match error {
        UserError::AlreadyRegistered => Status::already_exists(error.to_string()),
        UserError::NotFound => Status::not_found(error.to_string()),
        UserError::Deactivated => Status::failed_precondition(error.to_string()),
    }
}

fn reply(committed: Committed) -> Response<pb::CommandReply> {
    Response::new(pb::CommandReply {
        id: committed.id,
        version: committed.version,
    })
}

fn role_from_proto(raw: i32) -> Result<Role, Status> {
    match pb::Role::try_from(raw) {
        Ok(pb::Role::Customer) => Ok(Role::Customer),
        Ok(pb::Role::Admin) => Ok(Role::Admin),
        Ok(pb::Role::Service) => Ok(Role::Service),
        _ => Err(grpc::invalid_field(
            "role",
            "must be ROLE_CUSTOMER, ROLE_ADMIN or ROLE_SERVICE",
        )),
    }
}

fn user_from_row(row: UserRow) -> pb::User {
    let role = row
        .role
        .parse()
        .map_or(pb::Role::Unspecified, role_to_proto);
    let status = match row.status.as_str() {
        "DEACTIVATED" => pb::UserStatus::Deactivated,
        _ => pb::UserStatus::Active,
    };
    pb::User {
        id: row.id.to_string(),
        email: row.email,
        username: row.username,
        full_name: row.full_name,
        role: role.into(),
        status: status.into(),
        version: row.version as u64,
    }
}

impl UserGrpc {
    /// Runs `command` on user `user_id` for `caller`: their own account, or any account
    /// for admins (and, unless `admin_only`, nobody else).
    async fn change<T: KeyedRequest>(
        &self,
        caller: &Caller,
        request: &Request<T>,
        user_id: &str,
        command: UserCommand,
        admin_only: bool,
    ) -> Result<Response<pb::CommandReply>, Status> {
        let allowed = caller.role == Role::Admin || (!admin_only && caller.user_id == user_id);
        if !allowed {
            return Err(Status::permission_denied(if admin_only {
                "only admins may do this"
            } else {
                "customers may change only their own account"
            }));
        }
        let context = CommandContext::of(request, Some(caller))?;
        let committed = self
            .commands
            .execute(
                user_id,
                command,
                &context.metadata,
                context.idempotency.as_ref(),
                None,
            )
            .await
            .map_err(command_status)?;
        Ok(reply(committed))
    }
}

/// Command failures of this service, with its own unique constraint named in plain words.
fn command_status(error: CommandError<UserError>) -> Status {
    match error {
        CommandError::Unique { constraint } if constraint == EMAIL_CONSTRAINT => {
            Status::already_exists("email is already registered")
        }
        other => grpc::command_status(other, rejected),
    }
}

fn credential_status(error: CredentialError) -> Status {
    match error {
        CredentialError::Busy => Status::unavailable("too many logins in progress; retry shortly"),
        CredentialError::Database(e) => {
            tracing::warn!(error = %e, "credential store unavailable");
            Status::unavailable("the user store is unavailable; retry")
        }
        CredentialError::Hash(e) => {
            tracing::error!(error = %e, "password hashing failed");
            Status::internal("internal error")
        }
    }
}

pub fn role_to_proto(role: Role) -> pb::Role {
    match role {
        Role::Customer => pb::Role::Customer,
        Role::Admin => pb::Role::Admin,
        Role::Service => pb::Role::Service,
    }
}

#[tonic::async_trait]
impl pb::user_service_server::UserService for UserGrpc {
    async fn get_audit_trail(
        &self,
        request: Request<tillstream_proto::audit::v1::GetAuditTrailRequest>,
    ) -> Result<Response<tillstream_proto::audit::v1::AuditTrail>, Status> {
        let caller = self.gate.caller(&request).await?;
        tillstream_runtime::audit::grpc_trail::<User>(
            self.commands.pool(),
            &caller,
            request.into_inner(),
        )
        .await
        .map(Response::new)
    }

    async fn register_user(
        &self,
        request: Request<pb::RegisterUserRequest>,
    ) -> Result<Response<pb::CommandReply>, Status> {
        let context = CommandContext::of(&request, None)?;
        let req = request.get_ref();
        let registration = Registration::parse(&RegistrationInput {
            email: &req.email,
            username: &req.username,
            password: &req.password,
            full_name: &req.full_name,
        })
        .map_err(Violations::status)?;

        let user_id = uuid::Uuid::now_v7().to_string();
        let hash = credentials::hash_password(registration.password.clone())
            .await
            .map_err(credential_status)?;
        let credentials = CredentialRow {
            user_id: user_id.clone(),
            email: registration.email.clone(),
            password_hash: hash,
        };
        let command = UserCommand::Register {
            email: registration.email,
            username: registration.username,
            full_name: registration.full_name,
            role: Role::Customer,
        };
        let committed = self
            .commands
            .execute(
                &user_id,
                command,
                &context.metadata,
                context.idempotency.as_ref(),
                Some(&credentials),
            )
            .await
            .map_err(command_status)?;
        if !committed.replayed {
            tracing::info!(user_id = %committed.id, correlation_id = %context.metadata.correlation_id, "user registered");
        }
        Ok(reply(committed))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginReply>, Status> {
        let req = request.into_inner();
        // A NUL cannot be in a stored email (Postgres text refuses it): asking the store
        // would fail as if it were down (found by fuzzing the REST login).
        if req.email.len() > 254
            || req.email.contains('\0')
            || req.password.len() > crate::domain::registration_limits::MAX_PASSWORD_BYTES
        {
            return Err(Status::unauthenticated("invalid email or password"));
        }
        let user_id = self
            .credentials
            .authenticate(&req.email, &req.password)
            .await
            .map_err(credential_status)?
            .ok_or_else(|| Status::unauthenticated("invalid email or password"))?;
        let (user, _) = self.commands.load(&user_id).await.map_err(command_status)?;
        let role = match (user.is_active(), user.role) {
            (true, Some(role)) => role,
            _ => return Err(Status::unauthenticated("invalid email or password")),
        };
        let access_token = self.issuer.issue(&user_id, role).map_err(|e| {
            tracing::error!(error = %e, "token signing failed");
            Status::internal("internal error")
        })?;
        Ok(Response::new(pb::LoginReply {
            access_token,
            expires_in_seconds: self.issuer.lifetime().as_secs(),
            user_id,
            role: role_to_proto(role).into(),
        }))
    }

    async fn update_profile(
        &self,
        request: Request<pb::UpdateProfileRequest>,
    ) -> Result<Response<pb::CommandReply>, Status> {
        let caller = self.gate.caller(&request).await?;
        let req = request.get_ref();
        let user_id = grpc::uuid_field("user_id", &req.user_id)?;
        let command = UserCommand::UpdateProfile {
            full_name: grpc::short_text("full_name", &req.full_name, true)?,
        };
        self.change(&caller, &request, &user_id, command, false)
            .await
    }

    async fn change_user_role(
        &self,
        request: Request<pb::ChangeUserRoleRequest>,
    ) -> Result<Response<pb::CommandReply>, Status> {
        let caller = self.gate.caller(&request).await?;
        let req = request.get_ref();
        let user_id = grpc::uuid_field("user_id", &req.user_id)?;
        let command = UserCommand::ChangeRole {
            role: role_from_proto(req.role)?,
        };
        self.change(&caller, &request, &user_id, command, true)
            .await
    }

    async fn deactivate_user(
        &self,
        request: Request<pb::DeactivateUserRequest>,
    ) -> Result<Response<pb::CommandReply>, Status> {
        let caller = self.gate.caller(&request).await?;
        let req = request.get_ref();
        let user_id = grpc::uuid_field("user_id", &req.user_id)?;
        let command = UserCommand::Deactivate {
            reason: grpc::short_text("reason", &req.reason, false)?,
        };
        self.change(&caller, &request, &user_id, command, false)
            .await
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersReply>, Status> {
        let caller = self.gate.caller(&request).await?;
        if caller.role != Role::Admin {
            return Err(Status::permission_denied("only admins may list users"));
        }
        let req = request.into_inner();
        let limit = grpc::page_size(req.page_size)?;
        let before = grpc::decode_page_token(&req.page_token)?;
        let mut rows = self.reads.users(before, limit + 1).await.map_err(|error| {
            tracing::warn!(%error, "read model unavailable");
            Status::unavailable("the read model is unavailable; retry")
        })?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_page_token = match (more, rows.last()) {
            (true, Some(last)) => grpc::encode_page_token(last.id),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListUsersReply {
            users: rows.into_iter().map(user_from_row).collect(),
            next_page_token,
        }))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = self.gate.caller(&request).await?;
        let user_id = grpc::uuid_field("user_id", &request.get_ref().user_id)?;
        if !caller.may_act_for(&user_id) {
            return Err(Status::permission_denied(
                "customers may read only their own user",
            ));
        }
        let (user, version) = self.commands.load(&user_id).await.map_err(command_status)?;
        if !user.registered {
            return Err(Status::not_found(format!("user {user_id} not found")));
        }
        let status = match user.status {
            Some(UserStatus::Deactivated) => pb::UserStatus::Deactivated,
            _ => pb::UserStatus::Active,
        };
        Ok(Response::new(pb::User {
            id: user_id,
            email: user.email,
            username: user.username,
            full_name: user.full_name,
            role: user
                .role
                .map_or(pb::Role::Unspecified, role_to_proto)
                .into(),
            status: status.into(),
            version,
        }))
    }
}

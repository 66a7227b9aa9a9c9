//! The gRPC edge of the user service: decodes requests, checks who is calling, runs
//! commands, and maps every failure to a status once.

use std::sync::Arc;

use tillstream_events::{Role, UserStatus};
use tillstream_proto::user::v1 as pb;
use tillstream_runtime::event_store::{CommandBus, CommandError};
use tillstream_runtime::grpc::{self, Violations};
use tillstream_runtime::tokens::{TokenIssuer, TokenVerifier};
use tonic::{Request, Response, Status};

use crate::credentials::{self, CredentialError, Credentials};
use crate::domain::{Registration, RegistrationInput, User, UserCommand, UserError};

pub struct UserGrpc {
    pub(crate) commands: Arc<CommandBus<User>>,
    pub(crate) credentials: Credentials,
    pub(crate) issuer: TokenIssuer,
    pub(crate) verifier: TokenVerifier,
}

fn rejected(error: UserError) -> Status {
    match error {
        UserError::AlreadyRegistered => Status::already_exists(error.to_string()),
    }
}

fn credential_status(error: CredentialError) -> Status {
    match error {
        CredentialError::EmailTaken => Status::already_exists("email is already registered"),
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

fn parse_user_id(raw: &str) -> Result<uuid::Uuid, Status> {
    uuid::Uuid::parse_str(raw).map_err(|_| grpc::invalid_field("user_id", "must be a UUID"))
}

#[tonic::async_trait]
impl pb::user_service_server::UserService for UserGrpc {
    async fn register_user(
        &self,
        request: Request<pb::RegisterUserRequest>,
    ) -> Result<Response<pb::CommandReply>, Status> {
        let meta =
            grpc::event_metadata(request.metadata(), None, &request.get_ref().idempotency_key);
        let req = request.into_inner();
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
        self.credentials
            .reserve(&user_id, &registration.email, &hash)
            .await
            .map_err(credential_status)?;
        let command = UserCommand::Register {
            email: registration.email,
            username: registration.username,
            full_name: registration.full_name,
            role: Role::Customer,
        };
        match self.commands.execute(&user_id, command, &meta).await {
            Ok(version) => {
                tracing::info!(%user_id, correlation_id = %meta.correlation_id, "user registered");
                Ok(Response::new(pb::CommandReply {
                    id: user_id,
                    version,
                }))
            }
            Err(error) => {
                if let Err(release) = self.credentials.release(&user_id).await {
                    tracing::error!(%user_id, error = %release, "could not release email reservation");
                }
                Err(grpc::command_status(error, rejected))
            }
        }
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginReply>, Status> {
        let req = request.into_inner();
        if req.email.len() > 254
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
        let (user, _) = self
            .commands
            .load(&user_id)
            .await
            .map_err(|e| grpc::command_status(e, rejected))?;
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

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = grpc::authenticate(&self.verifier, request.metadata())?;
        let user_id = parse_user_id(&request.get_ref().user_id)?.to_string();
        if !caller.may_act_for(&user_id) {
            return Err(Status::permission_denied(
                "customers may read only their own user",
            ));
        }
        let (user, version) = self
            .commands
            .load(&user_id)
            .await
            .map_err(|e: CommandError<UserError>| grpc::command_status(e, rejected))?;
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

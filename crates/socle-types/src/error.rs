//! The one error type that crosses the API boundary.
//!
//! Every failure a caller can see is an [`ApiError`]: an OSC error code (from
//! Outscale's catalogue, `gateway_errors.yaml`), its family `Type`, the HTTP
//! status, and a `details` message written for the user. Operator-only detail
//! (file paths, QEMU stderr, SQL errors) goes in `internal`, which is logged
//! but never sent: a user sees "internal error, request id …" and the
//! operator finds the cause in the log under that request id.

use std::fmt;

/// The OSC error codes Socle emits. Codes and types follow Outscale's
/// catalogue; authentication and "missing parameter" are not in it and use
/// the codes Outscale's gateway answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 1 — bad or missing credentials / signature (HTTP 401).
    AccessDenied,
    /// 2 — the request is authenticated but its date is out of the window (HTTP 401).
    RequestExpired,
    /// 6 — the platform cannot serve the request now (its database is
    /// unreachable or too contended); retry later (HTTP 503, as Outscale's
    /// platform-wide throttling, which the SDKs retry with back-off).
    Unavailable,
    /// 4045 — unknown parameter name.
    InvalidParameter,
    /// 4047 — a parameter has a value we do not accept.
    InvalidParameterValue,
    /// 4104 — an ID with the wrong prefix.
    InvalidIdPrefix,
    /// 4105 — an ID with the right prefix but a wrong shape.
    MalformedId,
    /// 4106 — a string too long or too short.
    InvalidParameterValueLength,
    /// 4108 — a parameter of the wrong JSON type.
    InvalidParameterType,
    /// 4110 — the body is not valid JSON.
    InvalidJson,
    /// 4118 — the body is larger than the API accepts (HTTP 413).
    BodyTooLarge,
    /// 7000 — a required parameter is absent.
    MissingParameter,
    /// 5023 — no such image.
    NoSuchImage,
    /// 5038 — no such operation (or not implemented by this Socle).
    NoSuchOperation,
    /// 5063 — no such VM.
    NoSuchVm,
    /// 5071 — no such keypair.
    NoSuchKeypair,
    /// 5064 — no such volume.
    NoSuchVolume,
    /// 5054 — no such snapshot.
    NoSuchSnapshot,
    /// 5065 — no such Net.
    NoSuchNet,
    /// 5057 — no such subnet.
    NoSuchSubnet,
    /// 5020 — no such security group.
    NoSuchSecurityGroup,
    /// 4015 — an IP range whose size is not allowed.
    InvalidCidrSize,
    /// 9058 — the subnet's range overlaps another subnet of the Net.
    SubnetConflict,
    /// 9044 — the range is not inside the Net's range.
    NotInNetRange,
    /// 9066 — the Net still has subnets, NICs, gateways or security groups.
    NetInUse,
    /// 9057 — the subnet still has NICs or VMs.
    SubnetInUse,
    /// 9008 — a security group with that name exists already (HTTP 409).
    DuplicateGroup,
    /// 9005 — the security group already has that rule (HTTP 409, as Outscale).
    DuplicateRule,
    /// 9051 — the operation is not allowed on a `default` security group.
    ReservedGroup,
    /// 4053 — an IP protocol Socle does not filter on.
    InvalidProtocol,
    /// 4064 — a first port (or ICMP type) out of range.
    InvalidStartPort,
    /// 4021 — a last port (or ICMP code) out of range.
    InvalidEndPort,
    /// 4051 — ports that do not form a range for the protocol.
    InvalidPortSpecification,
    /// 5044 — no security group rule matches.
    NoSuchSecurityGroupRule,
    /// 10017 — too many rules in a security group.
    TooManySecurityGroupRules,
    /// 4019 — a device name Socle cannot use.
    InvalidDeviceName,
    /// 4029 — IOPS out of range or given for a type without IOPS.
    InvalidIops,
    /// 4078 — a volume size out of range (or a shrink).
    InvalidVolumeSize,
    /// 6007 — the volume is not in a state that allows the operation.
    InvalidVolumeState,
    /// 6001 — the image is not in a state that allows the operation.
    InvalidImageState,
    /// 9004 — the device name is already used on that VM.
    DeviceInUse,
    /// 9063 — the volume is not linked.
    VolumeNotInUse,
    /// 10024 — the storage pool has no room for that much volume size.
    TooMuchVolumeSize,
    /// 4000 — no such access key.
    NoSuchAccessKey,
    /// 6006 — the VM is not in a state that allows the operation.
    InvalidVmState,
    /// 6003 — the resource is in a state that forbids the operation.
    InvalidResourceState,
    /// 9011 — a resource with that name already exists (HTTP 409).
    DuplicateKey,
    /// 9029 — the operation conflicts with a protection or a dependency.
    ResourceConflict,
    /// 10010 — too many VMs for the account's quota.
    TooManyVms,
    /// 10029 — too many vCPUs for the account's quota.
    TooManyCores,
    /// 10042 — too much memory for the account's quota.
    TooMuchMemory,
    /// 10041 — too many tags on a resource.
    TooManyTags,
    /// 10004 — too many access keys.
    TooManyAccessKeys,
    /// 5036 — no such NIC.
    NoSuchNic,
    /// 5019 — no such internet service (gateway).
    NoSuchInternetService,
    /// 5046 — no such route table.
    NoSuchRouteTable,
    /// 5045 — no such route in the route table.
    NoSuchRoute,
    /// 5025 — no such public IP.
    NoSuchPublicIp,
    /// 5026 — no such public IP link.
    NoSuchPublicIpLink,
    /// 5032 — no such NAT service.
    NoSuchNatService,
    /// 5007 — no such link (route table link, NIC link).
    NoSuchLink,
    /// 4030 — an IP address that is malformed or outside its subnet.
    InvalidIpAddress,
    /// 9001 — the private IP is already used in the subnet.
    AddressInUse,
    /// 9024 — the internet service is already linked (or the Net has one).
    GatewayAlreadyLinked,
    /// 9026 — the internet service is not linked to that Net.
    GatewayNotLinked,
    /// 9052 — a route to that destination exists already.
    RouteAlreadyExists,
    /// 9045 — the subnet has no route to an internet service.
    NotPublicSubnet,
    /// 9059 — the subnet is already linked to a route table.
    SubnetAlreadyLinked,
    /// 9031 — the public IP is linked (unlink it first, or AllowRelink).
    PublicIpLinked,
    /// 10011 — no public IP left in the account's quota or the operator's pool.
    TooManyPublicIps,
    /// 10015 — too many NICs in the account.
    TooManyNics,
    /// 10021 — no free private IP in the subnet, or too many on the NIC.
    TooManyPrivateIps,
    /// 10032 — too many NAT services.
    TooManyNatServices,
    /// 9062 — the VM (or NIC) is in the public cloud, not in a Net.
    VmNotInNet,
    /// 2000 — an internal error (HTTP 500); details are in the server log.
    InternalError,
    /// 10001 — no host of the subregion (or of the cloud) has room for the
    /// VM now (HTTP 503, so that clients try again later). Outscale's
    /// gateway catalogue has no capacity error: the code is the free one
    /// before its TooManyResources range, the Type the name AWS-compatible
    /// tools know (InsufficientInstanceCapacity's family).
    InsufficientCapacity,
}

impl ErrorCode {
    pub fn code(self) -> &'static str {
        use ErrorCode::*;
        match self {
            AccessDenied => "1",
            RequestExpired => "2",
            InvalidParameter => "4045",
            InvalidParameterValue => "4047",
            InvalidIdPrefix => "4104",
            MalformedId => "4105",
            InvalidParameterValueLength => "4106",
            InvalidParameterType => "4108",
            InvalidJson => "4110",
            BodyTooLarge => "4118",
            MissingParameter => "7000",
            NoSuchImage => "5023",
            NoSuchOperation => "5038",
            NoSuchVm => "5063",
            NoSuchKeypair => "5071",
            NoSuchVolume => "5064",
            NoSuchSnapshot => "5054",
            NoSuchNet => "5065",
            NoSuchSubnet => "5057",
            NoSuchSecurityGroup => "5020",
            InvalidCidrSize => "4015",
            SubnetConflict => "9058",
            NotInNetRange => "9044",
            NetInUse => "9066",
            SubnetInUse => "9057",
            DuplicateGroup => "9008",
            DuplicateRule => "9005",
            ReservedGroup => "9051",
            InvalidProtocol => "4053",
            InvalidStartPort => "4064",
            InvalidEndPort => "4021",
            InvalidPortSpecification => "4051",
            NoSuchSecurityGroupRule => "5044",
            TooManySecurityGroupRules => "10017",
            InvalidDeviceName => "4019",
            InvalidIops => "4029",
            InvalidVolumeSize => "4078",
            InvalidVolumeState => "6007",
            InvalidImageState => "6001",
            DeviceInUse => "9004",
            VolumeNotInUse => "9063",
            TooMuchVolumeSize => "10024",
            NoSuchAccessKey => "4000",
            InvalidVmState => "6006",
            InvalidResourceState => "6003",
            DuplicateKey => "9011",
            ResourceConflict => "9029",
            TooManyVms => "10010",
            TooManyCores => "10029",
            TooMuchMemory => "10042",
            TooManyTags => "10041",
            TooManyAccessKeys => "10004",
            NoSuchNic => "5036",
            NoSuchInternetService => "5019",
            NoSuchRouteTable => "5046",
            NoSuchRoute => "5045",
            NoSuchPublicIp => "5025",
            NoSuchPublicIpLink => "5026",
            NoSuchNatService => "5032",
            NoSuchLink => "5007",
            InvalidIpAddress => "4030",
            AddressInUse => "9001",
            GatewayAlreadyLinked => "9024",
            GatewayNotLinked => "9026",
            RouteAlreadyExists => "9052",
            NotPublicSubnet => "9045",
            SubnetAlreadyLinked => "9059",
            PublicIpLinked => "9031",
            TooManyPublicIps => "10011",
            TooManyNics => "10015",
            TooManyPrivateIps => "10021",
            TooManyNatServices => "10032",
            VmNotInNet => "9062",
            InternalError => "2000",
            Unavailable => "6",
            InsufficientCapacity => "10001",
        }
    }

    /// The `Type` field: the error family.
    pub fn kind(self) -> &'static str {
        use ErrorCode::*;
        match self {
            AccessDenied => "AccessDenied",
            RequestExpired => "RequestExpired",
            InvalidParameter | InvalidParameterValue | InvalidIdPrefix | MalformedId
            | InvalidParameterValueLength | InvalidParameterType | InvalidJson | BodyTooLarge
            | NoSuchAccessKey | InvalidDeviceName | InvalidIops | InvalidVolumeSize | InvalidCidrSize
            | InvalidProtocol | InvalidStartPort | InvalidEndPort | InvalidPortSpecification => {
                "InvalidParameterValue"
            }
            MissingParameter => "MissingParameter",
            NoSuchImage | NoSuchOperation | NoSuchVm | NoSuchKeypair | NoSuchVolume | NoSuchSnapshot | NoSuchNet
            | NoSuchSubnet | NoSuchSecurityGroup | NoSuchSecurityGroupRule => "InvalidResource",
            InvalidVmState | InvalidResourceState | InvalidVolumeState | InvalidImageState => "InvalidState",
            DuplicateKey | ResourceConflict | DeviceInUse | VolumeNotInUse | SubnetConflict | NotInNetRange
            | NetInUse | SubnetInUse | DuplicateGroup | DuplicateRule | ReservedGroup => "ResourceConflict",
            TooManyVms | TooManyCores | TooMuchMemory | TooManyTags | TooManyAccessKeys
            | TooMuchVolumeSize | TooManySecurityGroupRules => "TooManyResources (QuotaExceded)",
            NoSuchNic | NoSuchInternetService | NoSuchRouteTable | NoSuchRoute | NoSuchPublicIp | NoSuchPublicIpLink | NoSuchNatService | NoSuchLink => "InvalidResource",
            InvalidIpAddress => "InvalidParameterValue",
            AddressInUse | GatewayAlreadyLinked | GatewayNotLinked | RouteAlreadyExists | NotPublicSubnet | SubnetAlreadyLinked | PublicIpLinked | VmNotInNet => "ResourceConflict",
            TooManyPublicIps | TooManyNics | TooManyPrivateIps | TooManyNatServices => "TooManyResources (QuotaExceded)",
            InternalError => "InternalError",
            Unavailable => "ServiceUnavailable",
            InsufficientCapacity => "InsufficientCapacity",
        }
    }

    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            AccessDenied | RequestExpired => 401,
            BodyTooLarge => 413,
            // A duplicate name or rule: Outscale answers 409 Conflict.
            DuplicateKey | DuplicateGroup | DuplicateRule => 409,
            InternalError => 500,
            Unavailable | InsufficientCapacity => 503,
            _ => 400,
        }
    }
}

/// An error as the API caller sees it, plus operator-only detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    /// Shown to the caller. Never contains secrets or host paths.
    pub details: String,
    /// Logged only.
    pub internal: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, details: impl Into<String>) -> Self {
        Self { code, details: details.into(), internal: None }
    }

    /// An unexpected failure: the user learns only that it happened.
    pub fn internal(operator_detail: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::InternalError,
            details: "internal error; the operator can find the cause in the server log under this request id".into(),
            internal: Some(operator_detail.into()),
        }
    }

    pub fn code(&self) -> &'static str {
        self.code.code()
    }

    pub fn invalid_value(details: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParameterValue, details)
    }

    pub fn missing(param: &str) -> Self {
        Self::new(ErrorCode::MissingParameter, format!("the parameter {param} is required"))
    }

    pub fn malformed_id(what: &str, id: &str) -> Self {
        Self::new(ErrorCode::MalformedId, format!("{id:?} is not a valid {what} ID"))
    }

    pub fn invalid_id_prefix(what: &str, prefix: &str, id: &str) -> Self {
        Self::new(
            ErrorCode::InvalidIdPrefix,
            format!("{id:?} is not a {what} ID (they start with \"{prefix}-\")"),
        )
    }

    /// Not found. Also the answer for another account's resource, so the two
    /// cases are indistinguishable.
    pub fn not_found(code: ErrorCode, what: &str, id: &str) -> Self {
        Self::new(code, format!("the {what} {id} does not exist"))
    }

    pub fn invalid_state(code: ErrorCode, details: impl Into<String>) -> Self {
        Self::new(code, details)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.code.code(), self.code.kind(), self.details)?;
        if let Some(internal) = &self.internal {
            write!(f, " ({internal})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// The JSON body of an error answer, as the OSC spec's `ErrorResponse`.
pub fn error_body(err: &ApiError, request_id: &str) -> serde_json::Value {
    serde_json::json!({
        "Errors": [{ "Code": err.code.code(), "Type": err.code.kind(), "Details": err.details }],
        "ResponseContext": { "RequestId": request_id },
    })
}

//! The protocol's string enumerations (PROTOCOL.md §2.5), with their exact wire strings.

wire_enum! {
    /// How far a write must get before it is acknowledged.
    pub enum WriteConcern {
        FireAndForget = "FIRE_AND_FORGET",
        Memory = "MEMORY",
        Applied = "APPLIED",
        Replicated = "REPLICATED",
        Persisted = "PERSISTED",
    }
}

wire_enum! {
    /// How a row changed relative to a live query or search.
    pub enum ChangeType {
        Enter = "ENTER",
        Update = "UPDATE",
        Leave = "LEAVE",
    }
}

wire_enum! {
    pub enum ServerEventType {
        Put = "PUT",
        Remove = "REMOVE",
        OrAdd = "OR_ADD",
        OrRemove = "OR_REMOVE",
    }
}

wire_enum! {
    pub enum CursorStatus {
        Valid = "valid",
        Expired = "expired",
        Invalid = "invalid",
        None = "none",
    }
}

wire_enum! {
    pub enum SortDirection {
        Asc = "asc",
        Desc = "desc",
    }
}

wire_enum! {
    pub enum NodeStatus {
        Active = "ACTIVE",
        Joining = "JOINING",
        Leaving = "LEAVING",
        Suspected = "SUSPECTED",
        Failed = "FAILED",
    }
}

wire_enum! {
    pub enum ClusterSubType {
        Search = "SEARCH",
        Query = "QUERY",
    }
}

wire_enum! {
    pub enum JournalEventType {
        Put = "PUT",
        Update = "UPDATE",
        Delete = "DELETE",
    }
}

wire_enum! {
    pub enum SearchMethod {
        Exact = "exact",
        FullText = "fullText",
        Semantic = "semantic",
    }
}

wire_enum! {
    /// Event type of an HTTP sync delta record.
    pub enum DeltaEventType {
        Put = "PUT",
        Remove = "REMOVE",
    }
}

wire_enum! {
    pub enum AggFunc {
        Count = "count",
        Sum = "sum",
        Min = "min",
        Max = "max",
        Avg = "avg",
    }
}

wire_enum! {
    /// Every predicate operator a client can send (PROTOCOL.md §5.2), including the TS-only
    /// `contains` and full-text `match*` operators.
    pub enum PredicateOp {
        And = "and",
        Or = "or",
        Not = "not",
        Eq = "eq",
        Neq = "neq",
        Gt = "gt",
        Gte = "gte",
        Lt = "lt",
        Lte = "lte",
        Like = "like",
        Regex = "regex",
        In = "in",
        Between = "between",
        IsNull = "isNull",
        IsNotNull = "isNotNull",
        ContainsAll = "containsAll",
        ContainsAny = "containsAny",
        Contains = "contains",
        StartsWith = "startsWith",
        EndsWith = "endsWith",
        Match = "match",
        MatchPhrase = "matchPhrase",
        MatchPrefix = "matchPrefix",
    }
}

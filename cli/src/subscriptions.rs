//! `whctl subscriptions …`: create, read, list, update and delete subscriptions, and read their secrets.

use std::io::Write;

use clap::{ArgGroup, Args, Subcommand};
use whd_sdk::pbjson_types::FieldMask;
use whd_sdk::{
    CreateSubscriptionRequest, ListSubscriptionsRequest, Subscription, SubscriptionSecret,
    UpdateSubscriptionRequest,
};

use crate::Context;
use crate::error::CliError;
use crate::output::{self, OutputFormat, Table};

/// Subcommands of `whctl subscriptions`.
#[derive(Debug, Subcommand)]
pub enum SubscriptionsCommand {
    /// Create a subscription and print it.
    Create(CreateArgs),
    /// Print one subscription (without its secret).
    Get {
        /// Subscription id (`sub_…`).
        id: String,
    },
    /// List subscriptions, oldest first.
    List(ListArgs),
    /// Change some fields of a subscription; fields not given stay as they are.
    Update(UpdateArgs),
    /// Delete a subscription; its pending deliveries end as failed.
    Delete {
        /// Subscription id (`sub_…`).
        id: String,
    },
    /// Print a subscription's signing secret.
    Secret {
        /// Subscription id (`sub_…`).
        id: String,
    },
}

/// Arguments of `whctl subscriptions create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Absolute http(s) URL that receives every webhook as an HTTP POST.
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// Event type to receive; repeat for several. Default: every event type.
    #[arg(long = "event-type", value_name = "TYPE")]
    pub event_types: Vec<String>,
    /// Free text for operators. Default: empty.
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// Signing secret (`whsec_` followed by base64). Default: deliveries are not signed.
    #[arg(long, value_name = "whsec_…", conflicts_with = "generate_secret")]
    pub secret: Option<String>,
    /// Let the server generate a signing secret and print it. Default: off.
    #[arg(long)]
    pub generate_secret: bool,
}

/// Arguments of `whctl subscriptions list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// At most this many subscriptions (1 to 1000). Default: the server's page size (50).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// Continue from the page token printed by a previous list. Default: the first page.
    #[arg(long, value_name = "TOKEN")]
    pub page_token: Option<String>,
}

/// Arguments of `whctl subscriptions update`. At least one change is required.
#[derive(Debug, Default, Args)]
#[command(group(
    ArgGroup::new("changes")
        .required(true)
        .multiple(true)
        .args(["url", "event_types", "clear_event_types", "description", "secret"])
))]
pub struct UpdateArgs {
    /// Subscription id (`sub_…`).
    pub id: String,
    /// New target URL. Default: unchanged.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Event type to receive, replacing the current list; repeat for several. Default: unchanged.
    #[arg(long = "event-type", value_name = "TYPE")]
    pub event_types: Vec<String>,
    /// Receive every event type again (empties the list). Default: off.
    #[arg(long, conflicts_with = "event_types")]
    pub clear_event_types: bool,
    /// New description. Default: unchanged.
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// New signing secret (`whsec_` followed by base64). Default: unchanged.
    #[arg(long, value_name = "whsec_…")]
    pub secret: Option<String>,
}

/// Runs one `subscriptions` subcommand.
pub(crate) async fn run(
    context: &Context,
    command: SubscriptionsCommand,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let format = context.output;
    // Each arm connects only after its arguments are checked, so that a mistake in the flags is
    // reported even when no server is running.
    let text = match command {
        SubscriptionsCommand::Create(args) => {
            let request = build_create_request(args);
            let subscription = context.client().await?.create_subscription(request).await?;
            render_subscription(format, &subscription)?
        }
        SubscriptionsCommand::Get { id } => {
            let subscription = context.client().await?.get_subscription(id).await?;
            render_subscription(format, &subscription)?
        }
        SubscriptionsCommand::List(args) => {
            let request = ListSubscriptionsRequest {
                // `--limit` is capped at 1000 by clap, so it always fits.
                page_size: args
                    .limit
                    .map_or(0, |limit| i32::try_from(limit).unwrap_or(i32::MAX)),
                page_token: args.page_token.unwrap_or_default(),
            };
            let response = context.client().await?.list_subscriptions(request).await?;
            match format {
                OutputFormat::Json => output::json(&response)?,
                OutputFormat::Table => {
                    render_list(&response.subscriptions, &response.next_page_token)
                }
            }
        }
        SubscriptionsCommand::Update(args) => {
            let request = build_update_request(&args)?;
            let subscription = context.client().await?.update_subscription(request).await?;
            render_subscription(format, &subscription)?
        }
        SubscriptionsCommand::Delete { id } => {
            context
                .client()
                .await?
                .delete_subscription(id.as_str())
                .await?;
            match format {
                // The proto3 JSON of google.protobuf.Empty.
                OutputFormat::Json => "{}\n".to_owned(),
                OutputFormat::Table => format!("deleted subscription {id}\n"),
            }
        }
        SubscriptionsCommand::Secret { id } => {
            let secret = context.client().await?.get_subscription_secret(id).await?;
            render_secret(format, &secret)?
        }
    };
    output::emit(out, &text)
}

fn build_create_request(args: CreateArgs) -> CreateSubscriptionRequest {
    CreateSubscriptionRequest {
        subscription: Some(Subscription {
            target_url: args.url,
            secret: args.secret.unwrap_or_default(),
            event_types: args.event_types,
            description: args.description.unwrap_or_default(),
            ..Subscription::default()
        }),
        generate_secret: args.generate_secret,
    }
}

/// Builds the update request with a field mask naming exactly the fields whose flags were given.
pub(crate) fn build_update_request(
    args: &UpdateArgs,
) -> Result<UpdateSubscriptionRequest, CliError> {
    let mut subscription = Subscription {
        id: args.id.clone(),
        ..Subscription::default()
    };
    let mut paths = Vec::new();
    if let Some(url) = &args.url {
        subscription.target_url = url.clone();
        paths.push("target_url");
    }
    if let Some(secret) = &args.secret {
        subscription.secret = secret.clone();
        paths.push("secret");
    }
    if !args.event_types.is_empty() || args.clear_event_types {
        if !args.event_types.is_empty() && args.clear_event_types {
            return Err(CliError::Usage(
                "--event-type and --clear-event-types cannot be used together".into(),
            ));
        }
        // With --clear-event-types the list stays empty, which the server reads as "every type".
        subscription.event_types = args.event_types.clone();
        paths.push("event_types");
    }
    if let Some(description) = &args.description {
        subscription.description = description.clone();
        paths.push("description");
    }
    if paths.is_empty() {
        return Err(CliError::Usage(
            "nothing to update: give at least one of --url, --event-type, --clear-event-types, --description, --secret"
                .into(),
        ));
    }
    Ok(UpdateSubscriptionRequest {
        subscription: Some(subscription),
        update_mask: Some(FieldMask {
            paths: paths.into_iter().map(String::from).collect(),
        }),
    })
}

fn render_subscription(
    format: OutputFormat,
    subscription: &Subscription,
) -> Result<String, CliError> {
    if format == OutputFormat::Json {
        return output::json(subscription);
    }
    let mut pairs = vec![
        ("ID", subscription.id.clone()),
        ("Target URL", subscription.target_url.clone()),
        (
            "Event types",
            output::event_types(&subscription.event_types),
        ),
        ("Description", output::or_none(&subscription.description)),
        (
            "Signed",
            if subscription.has_secret { "yes" } else { "no" }.to_owned(),
        ),
    ];
    // The server returns the secret only when it has just generated it.
    if !subscription.secret.is_empty() {
        pairs.push(("Secret", subscription.secret.clone()));
    }
    pairs.push((
        "Created",
        output::timestamp(subscription.create_time.as_ref()),
    ));
    pairs.push((
        "Updated",
        output::timestamp(subscription.update_time.as_ref()),
    ));
    Ok(output::fields(&pairs))
}

fn render_list(subscriptions: &[Subscription], next_page_token: &str) -> String {
    if subscriptions.is_empty() {
        return "no subscriptions\n".to_owned();
    }
    let mut table = Table::new(vec![
        "ID",
        "TARGET URL",
        "EVENT TYPES",
        "SIGNED",
        "CREATED",
        "DESCRIPTION",
    ]);
    for subscription in subscriptions {
        table.push_row(vec![
            subscription.id.clone(),
            subscription.target_url.clone(),
            output::event_types(&subscription.event_types),
            if subscription.has_secret { "yes" } else { "no" }.to_owned(),
            output::timestamp(subscription.create_time.as_ref()),
            subscription.description.clone(),
        ]);
    }
    let mut text = table.render();
    if !next_page_token.is_empty() {
        text.push_str(&format!(
            "\nmore: whctl subscriptions list --page-token {next_page_token}\n"
        ));
    }
    text
}

fn render_secret(format: OutputFormat, secret: &SubscriptionSecret) -> Result<String, CliError> {
    match format {
        OutputFormat::Json => output::json(secret),
        // The bare secret, so that `$(whctl subscriptions secret ID)` works in scripts.
        OutputFormat::Table if secret.secret.is_empty() => {
            Ok("(no secret: deliveries are not signed)\n".to_owned())
        }
        OutputFormat::Table => Ok(format!("{}\n", secret.secret)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update_args(id: &str) -> UpdateArgs {
        UpdateArgs {
            id: id.into(),
            ..UpdateArgs::default()
        }
    }

    fn mask_paths(request: &UpdateSubscriptionRequest) -> Vec<&str> {
        request
            .update_mask
            .as_ref()
            .unwrap()
            .paths
            .iter()
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn update_mask_names_only_the_fields_given() {
        let args = UpdateArgs {
            url: Some("https://new.example/hook".into()),
            description: Some(String::new()),
            ..update_args("sub_1")
        };

        let request = build_update_request(&args).unwrap();

        assert_eq!(mask_paths(&request), ["target_url", "description"]);
        let subscription = request.subscription.unwrap();
        assert_eq!(subscription.id, "sub_1");
        assert_eq!(subscription.target_url, "https://new.example/hook");
        assert_eq!(subscription.description, "");
    }

    #[test]
    fn update_with_event_types_replaces_the_list() {
        let args = UpdateArgs {
            event_types: vec!["a.b".into(), "c.d".into()],
            ..update_args("sub_1")
        };

        let request = build_update_request(&args).unwrap();

        assert_eq!(mask_paths(&request), ["event_types"]);
        assert_eq!(request.subscription.unwrap().event_types, ["a.b", "c.d"]);
    }

    #[test]
    fn clearing_event_types_sends_an_empty_list_under_the_mask() {
        let args = UpdateArgs {
            clear_event_types: true,
            ..update_args("sub_1")
        };

        let request = build_update_request(&args).unwrap();

        assert_eq!(mask_paths(&request), ["event_types"]);
        assert!(request.subscription.unwrap().event_types.is_empty());
    }

    #[test]
    fn update_without_changes_is_a_usage_error() {
        let error = build_update_request(&update_args("sub_1")).unwrap_err();

        assert!(
            error.to_string().starts_with("nothing to update"),
            "{error}"
        );
    }

    #[test]
    fn event_types_and_clearing_them_conflict() {
        let args = UpdateArgs {
            event_types: vec!["a".into()],
            clear_event_types: true,
            ..update_args("sub_1")
        };

        assert!(matches!(
            build_update_request(&args),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn subscription_view_shows_a_generated_secret_and_all_event_types() {
        let subscription = Subscription {
            id: "sub_1".into(),
            target_url: "http://x".into(),
            secret: "whsec_abc".into(),
            has_secret: true,
            ..Subscription::default()
        };

        let text = render_subscription(OutputFormat::Table, &subscription).unwrap();

        assert!(text.contains("Event types  (all)\n"), "{text}");
        assert!(text.contains("Secret       whsec_abc\n"), "{text}");
        assert!(text.contains("Signed       yes\n"), "{text}");
    }
}

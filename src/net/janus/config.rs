//! From the config file to [`JanusOptions`]: one room per channel, secrets read from their files.

use super::{ChannelSpec, JanusOptions, RoomSettings};
use crate::config::{Config, PortConfig, UplinkKind};

/// The Janus uplink's options for this box: every channel with its `[channel.NAME.janus]`
/// room; `api_secret_file`, `admin_key_file`, `pin_file` and `secret_file` are read here
/// (surrounding whitespace ignored). Errors name the key and the file. Only the floor host
/// (no `floor_hub`) creates rooms: an edge waits for them, whatever its `create` says.
pub fn janus_options(config: &Config) -> Result<JanusOptions, String> {
    let uplink = config
        .uplink
        .as_ref()
        .filter(|u| u.kind == UplinkKind::Janus)
        .ok_or("no `[uplink] kind = \"janus\"` in the config")?;
    let mut channels = Vec::new();
    for (name, channel) in &config.channel {
        let janus =
            channel.janus.as_ref().ok_or_else(|| format!("channel.{name}: no `[channel.{name}.janus]` room"))?;
        let key = |field: &str| format!("channel.{name}.janus.{field}");
        channels.push(ChannelSpec {
            channel: name.clone(),
            room: RoomSettings {
                room: janus.room,
                description: channel.label.clone().unwrap_or_else(|| name.clone()),
                secret: read_secret(&key("secret_file"), janus.secret_file.as_deref())?,
                pin: read_secret(&key("pin_file"), janus.pin_file.as_deref())?,
                admin_key: read_secret("uplink.admin_key_file", uplink.admin_key_file.as_deref())?,
                publishers: janus.publishers,
            },
            create: janus.create && uplink.floor_hub.is_none(),
            display: display_name(config, name),
        });
    }
    let mut options = JanusOptions::new(&uplink.url, channels);
    options.api_secret = read_secret("uplink.api_secret_file", uplink.api_secret_file.as_deref())?;
    Ok(options)
}

/// Our publisher's display name in a channel's room: `device/port` with the first port here
/// on that channel (the floor host maps it to the edge's floor member), or just `device` for
/// a box without a port there.
pub fn display_name(config: &Config, channel: &str) -> String {
    let port = config.port.iter().find(|(_, p)| match p {
        PortConfig::Radio(r) => r.channel == channel,
        PortConfig::Desk(d) => d.channels.iter().any(|c| c == channel),
    });
    match port {
        Some((port, _)) => format!("{}/{port}", config.device_id),
        None => config.device_id.clone(),
    }
}

fn read_secret(key: &str, file: Option<&str>) -> Result<Option<String>, String> {
    let Some(file) = file else { return Ok(None) };
    let text = crate::config::secret::read_secret(std::path::Path::new(file)).map_err(|e| format!("{key}: {e}"))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(format!("{key}: {file} is empty"));
    }
    Ok(Some(secret.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    fn config(extra_uplink: &str, extra_channel: &str) -> Config {
        parse_str(&text(extra_uplink, extra_channel), "t.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn text(extra_uplink: &str, extra_channel: &str) -> String {
        format!(
            "device_id = \"edge-a\"\n[channel.ops]\nlabel = \"Operations\"\n[channel.ops.janus]\nroom = 48213\n{extra_channel}\
             [channel.fire.janus]\nroom = 99\ncreate = false\npublishers = 4\n\
             [port.r1]\nkind = \"radio\"\nchannel = \"ops\"\ncor = {{ line = \"sim:c\" }}\nptt = {{ line = \"sim:p\" }}\n\
             [uplink]\nkind = \"janus\"\nurl = \"ws://127.0.0.2:8188\"\nfloor_hub = \"hub-1\"\n{extra_uplink}\
             [mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\nfleet_key_file = \"/k\"\n"
        )
    }

    #[test]
    fn rooms_and_display_names_from_the_config() {
        let o = janus_options(&config("", "")).unwrap();
        assert_eq!(o.url, "ws://127.0.0.2:8188");
        assert_eq!(o.api_secret, None);
        let got: Vec<_> = o
            .channels
            .iter()
            .map(|c| {
                (
                    c.channel.as_str(),
                    c.room.room,
                    c.create,
                    c.room.publishers,
                    c.display.as_str(),
                    c.room.description.as_str(),
                )
            })
            .collect();
        // An edge never creates a room, whatever `create` says: the floor host does.
        assert_eq!(
            got,
            [("fire", 99, false, 4, "edge-a", "fire"), ("ops", 48213, false, 16, "edge-a/r1", "Operations")]
        );
        let host = text("", "").replace("floor_hub = \"hub-1\"\n", "");
        let o = janus_options(&parse_str(&host, "t.toml").unwrap()).unwrap();
        let create: Vec<_> = o.channels.iter().map(|c| (c.channel.as_str(), c.create)).collect();
        assert_eq!(create, [("fire", false), ("ops", true)], "the floor host creates unless `create = false`");
    }

    #[test]
    fn secrets_are_read_trimmed_and_errors_name_key_and_file() {
        let dir = std::env::temp_dir().join(format!("roipd-janus-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        };
        let (api, admin, pin, secret) =
            (write("api", "s3cret\n"), write("admin", " adm "), write("pin", "1234\n"), write("room", "rs"));
        let c = config(
            &format!("api_secret_file = \"{api}\"\nadmin_key_file = \"{admin}\"\n"),
            &format!("pin_file = \"{pin}\"\nsecret_file = \"{secret}\"\n"),
        );
        let o = janus_options(&c).unwrap();
        assert_eq!(o.api_secret.as_deref(), Some("s3cret"));
        let ops = o.channels.iter().find(|c| c.channel == "ops").unwrap();
        assert_eq!(
            (ops.room.pin.as_deref(), ops.room.secret.as_deref(), ops.room.admin_key.as_deref()),
            (Some("1234"), Some("rs"), Some("adm"))
        );

        let missing = dir.join("missing").display().to_string();
        let e = janus_options(&config("", &format!("secret_file = \"{missing}\"\n"))).unwrap_err();
        assert!(e.starts_with(&format!("channel.ops.janus.secret_file: {missing}: ")), "{e}");
        let empty = write("empty", "\n");
        let e = janus_options(&config(&format!("api_secret_file = \"{empty}\"\n"), "")).unwrap_err();
        assert_eq!(e, format!("uplink.api_secret_file: {empty} is empty"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

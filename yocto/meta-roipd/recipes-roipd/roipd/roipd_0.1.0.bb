SUMMARY = "roipd radio-over-IP gateway daemon"
DESCRIPTION = "Turns a two-way radio's receiver (COR and audio) into a talker on a voice channel \
and keys its transmitter when someone else talks there: GPIO, CM108/AIOC and serial PTT/COR, \
ALSA audio, channels on the box or a hub, fleet management over MQTT. PTT is released on every \
exit path and after every stop (ExecStopPost=roipd safe-off)."
SECTION = "net"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

# Every crate of Cargo.lock, pinned by version and sha256 (yocto/meta-roipd/scripts/gen-crates-inc
# writes it without bitbake; `bitbake -c update_crates roipd` regenerates it the poky way).
require ${BPN}-crates.inc

inherit cargo cargo-update-recipe-crates pkgconfig systemd useradd

# ALSA (alsa-sys) and Opus (audiopus_sys) are found with pkg-config in the target sysroot.
DEPENDS += "alsa-lib libopus"

# --- Source ----------------------------------------------------------------------------------
# Default: the roipd checkout this layer lives in (yocto/meta-roipd is inside the repository),
# built in place through externalsrc: no fetch of roipd itself, only of the pinned crates.
# For a release image, build a fixed commit from git instead (local.conf or a bbappend):
#   ROIPD_GIT_URI = "git://git.example.net/roipd.git;protocol=https;branch=main"
#   SRCREV:pn-roipd = "<40-hex commit>"
ROIPD_GIT_URI ??= ""
ROIPD_SRC_DIR ??= "${@os.path.abspath(os.path.join(d.getVar('FILE_DIRNAME'), '..', '..', '..', '..'))}"

inherit ${@'' if d.getVar('ROIPD_GIT_URI') else 'externalsrc'}
EXTERNALSRC = "${@'' if d.getVar('ROIPD_GIT_URI') else d.getVar('ROIPD_SRC_DIR')}"
# Build outside the checkout, and leave no oe-workdir/oe-logs symlinks in it.
EXTERNALSRC_BUILD = "${WORKDIR}/build"
EXTERNALSRC_SYMLINKS = ""

SRC_URI += "${@d.getVar('ROIPD_GIT_URI') + ';destsuffix=roipd-git' if d.getVar('ROIPD_GIT_URI') else ''}"
# scarthgap unpacks into WORKDIR, styhead and later into UNPACKDIR (externalsrc overrides S).
S = "${@(d.getVar('UNPACKDIR') or d.getVar('WORKDIR')) + '/roipd-git'}"

# --- Build -----------------------------------------------------------------------------------
# Cargo.toml's release profile strips the binary; let OE strip it instead, so roipd-dbg gets the
# symbols and the QA check "already-stripped" stays quiet. LTO and panic = "abort" stay.
export CARGO_PROFILE_RELEASE_STRIP = "false"
# Cargo.toml says rust-version = "1.85": cargo refuses an older rustc with a clear message.
# scarthgap's own Rust (1.75) is too old; see README.md (Rust version).

# --- Install ---------------------------------------------------------------------------------
do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/systemd/roipd.service ${D}${systemd_system_unitdir}/roipd.service

    install -d ${D}${nonarch_libdir}/sysusers.d ${D}${nonarch_libdir}/tmpfiles.d
    install -m 0644 ${S}/systemd/roipd.sysusers ${D}${nonarch_libdir}/sysusers.d/roipd.conf
    install -m 0644 ${S}/systemd/roipd.tmpfile ${D}${nonarch_libdir}/tmpfiles.d/roipd.conf

    install -d ${D}${nonarch_base_libdir}/udev/rules.d
    install -m 0644 ${S}/packaging/60-roipd.rules ${D}${nonarch_base_libdir}/udev/rules.d/60-roipd.rules

    # The default config: the simulated demo, which keys no real radio. Replace it in an image
    # with a bbappend that installs one of board/*/roipd.toml (or your own) here.
    install -d -m 0750 -g roipd ${D}${sysconfdir}/roipd
    install -m 0644 ${ROIPD_CONFIG} ${D}${sysconfdir}/roipd/roipd.toml

    install -d ${D}${docdir}/${BPN}/examples
    install -m 0644 ${S}/README.md ${D}${docdir}/${BPN}/README.md
    cp -R --no-preserve=ownership ${S}/board/. ${D}${docdir}/${BPN}/examples/
}
# Which file becomes /etc/roipd/roipd.toml (an absolute path; default: the packaged demo).
ROIPD_CONFIG ??= "${S}/packaging/roipd.toml"

CONFFILES:${PN} = "${sysconfdir}/roipd/roipd.toml"
FILES:${PN} += " \
    ${systemd_system_unitdir}/roipd.service \
    ${nonarch_libdir}/sysusers.d/roipd.conf \
    ${nonarch_libdir}/tmpfiles.d/roipd.conf \
    ${nonarch_base_libdir}/udev/rules.d/60-roipd.rules \
"

# --- systemd ---------------------------------------------------------------------------------
SYSTEMD_SERVICE:${PN} = "roipd.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

# --- User and groups -------------------------------------------------------------------------
# The same account as systemd/roipd.sysusers, made at image build time (read-only rootfs
# friendly). groupadd is skipped for groups the image already has (audio, dialout, plugdev
# come from base-passwd; gpio does not).
USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system gpio; --system plugdev"
USERADD_PARAM:${PN} = "--system --user-group --home-dir /var/lib/roipd --no-create-home \
    --shell /sbin/nologin --comment 'roipd radio-over-IP gateway' \
    --groups audio,gpio,dialout,plugdev roipd"

RRECOMMENDS:${PN} += "alsa-utils-alsamixer alsa-utils-aplay"

#!/bin/bash
# Peak memory of the app (release build) opening a 120 x 1024 x 1024 16-bit stack and browsing
# every slice with the slice slider, under Xvfb: held in memory (no limit), and read slice by
# slice (UNET_STUDIO_MEMORY_LIMIT=1 GiB, as on a machine with 1 GiB free: the stack's 720 MiB
# decoded exceeds half of it, the cache keeps 128 MiB). Usage: app_memory.sh STACK.tif
set -u
BIN=${BIN:-/root/.cache/unet-studio/target/release/unet-studio}
STACK=$1
export DISPLAY=:78
pkill -f "Xvfb :78" 2>/dev/null; sleep 0.5
Xvfb :78 -screen 0 1600x1000x24 >/dev/null 2>&1 &
XV=$!
sleep 1.5
run() {
    local label=$1; shift
    H=$(mktemp -d)
    env -u DBUS_SESSION_BUS_ADDRESS XDG_DATA_HOME=$H/data XDG_CONFIG_HOME=$H/config HOME=$H "$@" \
        $BIN "$STACK" > $H/app.log 2>&1 &
    APP=$!
    sleep 20
    opened=$(grep VmHWM /proc/$APP/status | awk '{print $2}')
    # The slice slider from the first slice to the last, a few slices per step.
    xdotool mousemove 16 61 mousedown 1
    for x in $(seq 18 2 110); do xdotool mousemove $x 61; sleep 0.4; done
    xdotool mouseup 1
    sleep 3
    browsed=$(grep VmHWM /proc/$APP/status | awk '{print $2}')
    now=$(grep VmRSS /proc/$APP/status | awk '{print $2}')
    import -window root /tmp/app_memory_$label.png
    echo "$label: peak after opening $((opened / 1024)) MiB, peak after browsing every slice $((browsed / 1024)) MiB, resident at the end $((now / 1024)) MiB"
    kill $APP; sleep 2; rm -rf $H
}
run in-memory env
run slice-by-slice env UNET_STUDIO_MEMORY_LIMIT=1073741824
kill $XV

